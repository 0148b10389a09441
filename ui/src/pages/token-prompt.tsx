/** Asks for a bearer token; it is kept in this tab's sessionStorage, never in the URL. */
import { useState } from "preact/hooks";
import { decodeToken } from "../auth";

/** Props of {@link TokenPrompt}. */
export interface TokenPromptProps {
  /** Why a token is asked for again (the last one was refused), if it was. */
  reason: string | undefined;
  onToken: (token: string) => void;
}

/** The sign-in form. */
export function TokenPrompt({ reason, onToken }: TokenPromptProps) {
  const [value, setValue] = useState("");
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const submit = (e: Event): void => {
    e.preventDefault();
    const token = value.trim().replace(/^Bearer\s+/i, "");
    if (token === "") {
      setProblem("Paste a token first.");
      return;
    }
    const info = decodeToken(token);
    if (info?.expiresAt !== undefined && info.expiresAt.getTime() < Date.now()) {
      setProblem(`This token expired at ${info.expiresAt.toLocaleString()}.`);
      return;
    }
    onToken(token);
  };
  return (
    <main id="main" class="token-prompt">
      <h1>Nexusflow</h1>
      {reason !== undefined && (
        <p class="error" role="alert">
          {reason}
        </p>
      )}
      <form onSubmit={submit}>
        <label for="token">Bearer token</label>
        <textarea
          id="token"
          name="token"
          rows={4}
          autoComplete="off"
          spellcheck={false}
          aria-describedby="token-help"
          value={value}
          onInput={(e) => setValue(e.currentTarget.value)}
        />
        <p id="token-help" class="help">
          Kept in this tab only (sessionStorage) and sent to the gateway with each call. With{" "}
          <code>npm start</code>, open the link it prints instead; for another token:{" "}
          <code>npx nexusflow token --scope runs:read</code>.
        </p>
        {problem !== undefined && (
          <p class="error" role="alert">
            {problem}
          </p>
        )}
        <button type="submit">Open</button>
      </form>
    </main>
  );
}
