/**
 * What a run gained with durable waits, reruns and child workflows: the signals it received and a
 * form to send one (SignalRun), a failed step's "Rerun from this step" (RerunRun), and the links
 * between a run and its original, its reruns, its parent and its children. The write actions are
 * shown to tokens with runs:write; the gateway checks the scope regardless.
 */
import { type JsonValue, fromJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Run, RunSignal } from "@nexusflow/gen";
import { useEffect, useState } from "preact/hooks";
import { describeError } from "../api";
import { formatTime, previewJson } from "../format";
import { linkHandler, navigate, routePath } from "../router";
import { useSession } from "../session";

/** A link to a run's page. */
export function RunLink({ runId }: { runId: string }) {
  const route = { page: "run", runId } as const;
  return (
    <a class="mono" href={routePath(route)} onClick={linkHandler(route)}>
      {runId}
    </a>
  );
}

/** The signals a run received, oldest first. */
export function SignalsTable({ signals }: { signals: readonly RunSignal[] }) {
  if (signals.length === 0) return <p class="muted">No signal received.</p>;
  return (
    <table class="signals" data-testid="signals">
      <caption>Signals received</caption>
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Received</th>
          <th scope="col">Taken by step</th>
          <th scope="col">Idempotency key</th>
          <th scope="col">Payload</th>
        </tr>
      </thead>
      <tbody>
        {signals.map((s, i) => (
          <tr key={`${s.name}-${i}`} data-signal={s.name}>
            <td class="mono">{s.name}</td>
            <td>{formatTime(s.receiveTime)}</td>
            <td class="mono">{s.stepId === "" ? "kept for a wait to come" : s.stepId}</td>
            <td class="mono">{s.idempotencyKey || "—"}</td>
            <td>
              {s.payload !== undefined ? (
                <code>{payloadText(s.payload)}</code>
              ) : s.stepId !== "" ? (
                `the output of step ${s.stepId}`
              ) : (
                "—"
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Characters of a signal's payload the table shows (a payload may be 64 KiB). */
const PAYLOAD_PREVIEW_CHARS = 300;

/** A signal's payload as one line of JSON, cut at {@link PAYLOAD_PREVIEW_CHARS}. */
function payloadText(payload: Value): string {
  const preview = previewJson(payload, PAYLOAD_PREVIEW_CHARS, "");
  return preview.truncated ? `${preview.text}…` : preview.text;
}

/** The payload text as a google.protobuf.Value, or what is wrong with it. */
function parsePayload(text: string): { value: Value | undefined } | { problem: string } {
  if (text.trim() === "") return { value: undefined };
  try {
    return { value: fromJson(ValueSchema, JSON.parse(text) as JsonValue) };
  } catch (e) {
    return { problem: `Payload: not JSON (${e instanceof Error ? e.message : String(e)}).` };
  }
}

/** Sends a signal to a run: a name and an optional JSON payload; disabled once the run `ended`. */
export function SignalForm({
  run,
  signalNames,
  ended,
}: {
  run: Run;
  signalNames: readonly string[];
  ended: boolean;
}) {
  const { api } = useSession();
  const [name, setName] = useState(signalNames[0] ?? "");
  // The definition may be read after the form is shown: suggest its first signal then.
  const suggested = signalNames[0];
  useEffect(() => {
    if (suggested !== undefined) setName((n) => (n === "" ? suggested : n));
  }, [suggested]);
  const [payload, setPayload] = useState("");
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok: boolean; text: string } | undefined>(undefined);
  const send = async (e: Event): Promise<void> => {
    e.preventDefault();
    const parsed = parsePayload(payload);
    if ("problem" in parsed) {
      setResult({ ok: false, text: parsed.problem });
      return;
    }
    if (name.trim() === "") {
      setResult({ ok: false, text: "Signal name: required." });
      return;
    }
    setBusy(true);
    try {
      const res = await api.signalRun({
        runId: run.id,
        name: name.trim(),
        payload: parsed.value,
        idempotencyKey: crypto.randomUUID(),
      });
      setResult({
        ok: true,
        text:
          res.stepId === ""
            ? `Signal ${name.trim()} sent: no step waits for it yet, it is kept for the next one.`
            : `Signal ${name.trim()} sent: step ${res.stepId} took it.`,
      });
    } catch (err) {
      setResult({ ok: false, text: describeError(err) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="signal-form" aria-labelledby="signal-title" onSubmit={(e) => void send(e)}>
      <h3 id="signal-title">Send a signal</h3>
      <label>
        Signal name
        <input
          type="text"
          value={name}
          list="signal-names"
          required
          onInput={(e) => setName(e.currentTarget.value)}
        />
      </label>
      <datalist id="signal-names">
        {signalNames.map((n) => (
          <option key={n} value={n} />
        ))}
      </datalist>
      <label>
        Payload (JSON, optional)
        <textarea value={payload} onInput={(e) => setPayload(e.currentTarget.value)} />
      </label>
      <div>
        <button type="submit" disabled={busy || ended} aria-describedby={ended ? "signal-ended" : undefined}>
          Send signal
        </button>
      </div>
      {ended && (
        <p class="muted" id="signal-ended">
          The run has ended: it takes no more signals.
        </p>
      )}
      {result !== undefined &&
        (result.ok ? (
          <p role="status" data-testid="signal-result">
            {result.text}
          </p>
        ) : (
          <p class="error" role="alert" data-testid="signal-result">
            {result.text}
          </p>
        ))}
    </form>
  );
}

/** Starts a rerun of `run` from `stepId` and goes to the new run's page. */
export function RerunButton({ run, stepId }: { run: Run; stepId: string }) {
  const { api } = useSession();
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const rerun = async (): Promise<void> => {
    setBusy(true);
    try {
      const res = await api.rerunRun({
        runId: run.id,
        fromStep: stepId,
        idempotencyKey: crypto.randomUUID(),
      });
      if (res.run !== undefined) navigate({ page: "run", runId: res.run.id });
    } catch (e) {
      setProblem(describeError(e));
      setBusy(false);
      setConfirming(false);
    }
  };
  return (
    <div class="actions" role="group" aria-label={`Rerun from step ${stepId}`}>
      {confirming ? (
        <>
          <span>
            Start a new run of this input that reuses the steps before {stepId} and runs {stepId} and what
            follows again?
          </span>
          <button type="button" disabled={busy} onClick={() => void rerun()}>
            Yes, rerun
          </button>
          <button type="button" class="secondary" disabled={busy} onClick={() => setConfirming(false)}>
            Keep as is
          </button>
        </>
      ) : (
        <button type="button" onClick={() => setConfirming(true)}>
          Rerun from this step
        </button>
      )}
      {problem !== undefined && (
        <p class="error" role="alert">
          {problem}
        </p>
      )}
    </div>
  );
}
