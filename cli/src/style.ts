/** Terminal styling: ANSI colours that turn into nothing when colour is off. */

/** A set of text stylers; every one is the identity when colour is disabled. */
export interface Style {
  readonly enabled: boolean;
  bold(text: string): string;
  dim(text: string): string;
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  blue(text: string): string;
  magenta(text: string): string;
  cyan(text: string): string;
  gray(text: string): string;
}

function sgr(open: number, close: number): (text: string) => string {
  return (text) => `\u001b[${open}m${text}\u001b[${close}m`;
}

/** Stylers for a terminal that does (`enabled`) or does not support colour. */
export function createStyle(enabled: boolean): Style {
  const id = (text: string): string => text;
  const pick = (open: number, close: number): ((text: string) => string) => (enabled ? sgr(open, close) : id);
  return {
    enabled,
    bold: pick(1, 22),
    dim: pick(2, 22),
    red: pick(31, 39),
    green: pick(32, 39),
    yellow: pick(33, 39),
    blue: pick(34, 39),
    magenta: pick(35, 39),
    cyan: pick(36, 39),
    gray: pick(90, 39),
  };
}

/** Visible width of `text`, ignoring ANSI escape sequences. */
export function visibleLength(text: string): number {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, "").length;
}

/** Draws `lines` in a box of light box-drawing characters. */
export function box(lines: readonly string[]): string {
  const width = Math.max(...lines.map(visibleLength));
  const pad = (line: string): string => line + " ".repeat(width - visibleLength(line));
  return [`┌─${"─".repeat(width)}─┐`, ...lines.map((l) => `│ ${pad(l)} │`), `└─${"─".repeat(width)}─┘`].join(
    "\n",
  );
}
