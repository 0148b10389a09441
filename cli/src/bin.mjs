#!/usr/bin/env node
// The `nexusflow` executable: runs the TypeScript CLI in this Node through tsx's loader.
import { register } from "tsx/esm/api";

register();
await import("./main.ts");
