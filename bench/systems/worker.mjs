// Worker-thread bootstrap: loads the TypeScript module named in `workerData.module` through tsx
// (a worker does not inherit the parent's loader hooks on Node 20).
import { workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
await import(new URL(workerData.module, import.meta.url).href);
