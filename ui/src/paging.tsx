/** Paging through a list the API answers page by page (`page_token` in, `next_page_token` out). */
import { useState } from "preact/hooks";

/** Where a list page is: the token of this page, of the next one, and how to move. */
export interface Paging {
  /** Token of the page shown ("" is the first page). */
  pageToken: string;
  /** 1-based number of the page shown. */
  page: number;
  /** Token of the next page ("" when this is the last). */
  next: string;
  /**
   * Set when an answer gave, as its next page's, the token of a page already shown (a server whose
   * token does not advance): that page is not offered again.
   */
  repeated: string | undefined;
  /** Records the next page's token from an answer. */
  setNext: (token: string) => void;
  /** Back to the first page (the filters changed). */
  reset: () => void;
  back: () => void;
  forward: () => void;
}

/** Paging state of a list page: the tokens of the pages before this one, and the next page's. */
export function usePaging(): Paging {
  const [pages, setPages] = useState<string[]>([""]);
  const [next, setNext] = useState("");
  const [repeated, setRepeated] = useState<string | undefined>(undefined);
  return {
    pageToken: pages[pages.length - 1] ?? "",
    page: pages.length,
    next,
    repeated,
    setNext: (token) => {
      const seen = token !== "" && pages.includes(token);
      setNext(seen ? "" : token);
      setRepeated(seen ? token : undefined);
    },
    reset: () => setPages([""]),
    back: () => setPages(pages.slice(0, -1)),
    forward: () => setPages([...pages, next]),
  };
}

/** The previous / next page buttons of a list, named for screen readers by `label`. */
export function PagingNav({ paging, label }: { paging: Paging; label: string }) {
  return (
    <nav class="paging" aria-label={label}>
      <button type="button" class="secondary" disabled={paging.page <= 1} onClick={paging.back}>
        Previous page
      </button>
      <span>Page {paging.page}</span>
      <button type="button" class="secondary" disabled={paging.next === ""} onClick={paging.forward}>
        Next page
      </button>
      {paging.repeated !== undefined && (
        <span class="muted">
          The server gave the token of a page already shown as the next page's: no further page.
        </span>
      )}
    </nav>
  );
}
