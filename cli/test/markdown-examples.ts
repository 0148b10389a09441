/**
 * The code blocks of a Markdown file, with what the documentation test must do with each.
 *
 * A fenced block's language says how it runs (`sh`/`bash`/`shell` in bash, `ts`/`typescript` with
 * tsx, `json` parsed); a block in another language or none (a folder tree, a table) is prose.
 * HTML comments right above a block (invisible on GitHub) refine it, one directive per comment:
 *
 *   <!-- example: skip: why it cannot run here -->     never run (the reason is required)
 *   <!-- example: expect: /regex/ -->                   its output must match (may repeat)
 *   <!-- example: exit: 1 -->                           the exit status it documents (default 0)
 *   <!-- example: background: /regex/ -->               a server: start it, wait until its output
 *                                                       matches, stop it when the file is done
 *   <!-- example: file: path -->                        write the block to path (cwd-relative)
 *   <!-- example: definition -->                        a JSON workflow definition: register it
 *   <!-- example: terminal: new -->                     run in a new terminal: in the checkout,
 *                                                       none of the earlier blocks' variables
 */

/** How a block is used. */
export type ExampleKind = "shell" | "typescript" | "json";

/** One runnable block of a Markdown file. */
export interface Example {
  /** The Markdown file, as given. */
  readonly file: string;
  /** 1-based line of the opening fence. */
  readonly line: number;
  readonly kind: ExampleKind;
  /** The block's text, without the fences or their indentation. */
  readonly code: string;
  /** Set: the block is not run, for this reason. */
  readonly skip?: string;
  /** Patterns its output (stdout, then stderr) must match. */
  readonly expect: readonly RegExp[];
  /** The exit status it should end with. */
  readonly exit: number;
  /** Set: it keeps running; ready once its output matches. */
  readonly background?: RegExp;
  /** Set: the block is a file to write there rather than a command. */
  readonly writeTo?: string;
  /** A workflow definition to register. */
  readonly definition: boolean;
  /** Runs in a new terminal (the checkout, the starting environment). */
  readonly newTerminal: boolean;
}

/** A directive that cannot be understood; the message names the file and line. */
export class ExampleSyntaxError extends Error {
  override name = "ExampleSyntaxError";
}

const KINDS: Readonly<Record<string, ExampleKind>> = {
  sh: "shell",
  bash: "shell",
  shell: "shell",
  ts: "typescript",
  typescript: "typescript",
  json: "json",
};

function regex(text: string, where: string): RegExp {
  const match = /^\/(.*)\/([a-z]*)$/s.exec(text.trim());
  if (match === null) throw new ExampleSyntaxError(`${where}: expected /regex/, got ${JSON.stringify(text)}`);
  try {
    return new RegExp(match[1] ?? "", match[2]);
  } catch (e) {
    throw new ExampleSyntaxError(`${where}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

interface Directives {
  skip?: string;
  expect: RegExp[];
  exit: number;
  background?: RegExp;
  writeTo?: string;
  definition: boolean;
  newTerminal: boolean;
}

function parseDirectives(comments: readonly string[], where: string): Directives {
  const out: Directives = { expect: [], exit: 0, definition: false, newTerminal: false };
  for (const comment of comments) {
    const text = comment.trim();
    const colon = text.indexOf(":");
    const name = (colon < 0 ? text : text.slice(0, colon)).trim();
    const value = colon < 0 ? "" : text.slice(colon + 1).trim();
    switch (name) {
      case "skip":
        if (value === "") throw new ExampleSyntaxError(`${where}: skip needs a reason`);
        out.skip = value;
        break;
      case "expect":
        out.expect.push(regex(value, where));
        break;
      case "exit":
        if (!/^\d{1,3}$/.test(value))
          throw new ExampleSyntaxError(`${where}: exit needs a status, got "${value}"`);
        out.exit = Number(value);
        break;
      case "background":
        out.background = regex(value, where);
        break;
      case "file":
        if (value === "") throw new ExampleSyntaxError(`${where}: file needs a path`);
        out.writeTo = value;
        break;
      case "definition":
        out.definition = true;
        break;
      case "terminal":
        if (value !== "new") throw new ExampleSyntaxError(`${where}: terminal takes "new", got "${value}"`);
        out.newTerminal = true;
        break;
      default:
        throw new ExampleSyntaxError(`${where}: unknown directive "${name}"`);
    }
  }
  return out;
}

/** The runnable blocks of `markdown` (named `file` in errors), in order. */
export function extractExamples(file: string, markdown: string): Example[] {
  const lines = markdown.split("\n");
  const examples: Example[] = [];
  let pending: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? "";
    const comment = /^\s*<!--\s*example:(.*?)-->\s*$/.exec(line);
    if (comment !== null) {
      pending.push(comment[1] ?? "");
      continue;
    }
    const fence = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(line);
    if (fence === null) {
      if (line.trim() !== "") pending = [];
      continue;
    }
    const [, indent = "", marker = "```", lang = ""] = fence;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length; i++) {
      const l = lines[i] ?? "";
      if (l.trim().startsWith(marker) && l.trim().replace(/[`~]/g, "") === "") break;
      body.push(l.startsWith(indent) ? l.slice(indent.length) : l.trimStart());
    }
    if (i >= lines.length) throw new ExampleSyntaxError(`${file}:${start + 1}: code block is never closed`);
    const kind = KINDS[lang.toLowerCase()];
    const where = `${file}:${start + 1}`;
    if (kind === undefined) {
      if (pending.length > 0) throw new ExampleSyntaxError(`${where}: directives on a block that never runs`);
      continue;
    }
    const directives = parseDirectives(pending, where);
    pending = [];
    examples.push({
      file,
      line: start + 1,
      kind,
      code: body.join("\n"),
      expect: directives.expect,
      exit: directives.exit,
      definition: directives.definition,
      newTerminal: directives.newTerminal,
      ...(directives.skip === undefined ? {} : { skip: directives.skip }),
      ...(directives.background === undefined ? {} : { background: directives.background }),
      ...(directives.writeTo === undefined ? {} : { writeTo: directives.writeTo }),
    });
  }
  return examples;
}

/** Where addresses in the examples point, and where they point in the test. */
export interface AddressMap {
  /** The gateway as `host:port` (the examples say 127.0.0.1:8080 or localhost:8080). */
  gateway: string;
  /** The scheduler as `host:port` (the examples say 127.0.0.1:50051). */
  scheduler: string;
}

/**
 * The example's code with the documented default addresses replaced by the test stack's (which
 * listens on free ports, so that the test never fights a developer's own `npm start`).
 */
export function withAddresses(code: string, map: AddressMap): string {
  return code
    .replace(/\b(?:127\.0\.0\.1|localhost):8080\b/g, map.gateway)
    .replace(/\b(?:127\.0\.0\.1|localhost):50051\b/g, map.scheduler);
}
