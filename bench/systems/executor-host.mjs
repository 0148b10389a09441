// Worker-thread bootstrap: loads the TypeScript executor host through tsx (a worker does not
// inherit the parent's loader hooks on Node 20).
import { register } from "tsx/esm/api";

register();
await import("./executor-host.ts");
