/**
 * The embedded artifact store: objects are files under a root folder, at the path their key names
 * (so the folder is browsable as is), with a small JSON sidecar per object under `.meta/` holding
 * the content type and SHA-256.
 *
 * ```text
 * {root}/runs/{run}/{step}/attempt-1/logs.jsonl   the object
 * {root}/.meta/runs/{run}/{step}/attempt-1/logs.jsonl   its sidecar {contentType, sha256, size, ino}
 * {root}/.tmp/…                                   writes in progress
 * ```
 *
 * Writes go to a temporary file first and are renamed into place, so a reader sees the old or the
 * new object, never half of one. The sidecar records the inode of the data file it describes; a
 * sidecar that does not match it (inode, size, mtime: a concurrent overwrite, a crash between the two renames, a file
 * copied in by hand) is ignored and the hash recomputed from the data.
 *
 * Reads never leave the store's folder: an object is opened without following a link at its last
 * component, and the file actually opened must lie under the root's real path (a symbolic link
 * planted in the folder, to a file or a directory outside, reads as no object). Listings do not
 * follow links either.
 */
import { createHash, randomUUID } from "node:crypto";
import { constants, createReadStream, createWriteStream, type Stats } from "node:fs";
import {
  type FileHandle,
  mkdir,
  open,
  readFile,
  readdir,
  realpath,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
  writeFile,
} from "node:fs/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ArtifactRef } from "@nexusflow/gen";
import { ArtifactError } from "./errors.js";
import { checkKey, checkPrefix } from "./keys.js";
import {
  type ArtifactData,
  type ArtifactStore,
  DEFAULT_CONTENT_TYPE,
  HashingStream,
  type ListOptions,
  type PresignedUrl,
  type PutOptions,
  artifactRef,
  checkContentType,
  isStream,
  sha256Hex,
  toBuffer,
} from "./store.js";

/** Options of {@link FilesystemArtifactStore}. */
export interface FilesystemArtifactStoreOptions {
  /** Root folder; created by `ensureReady()` when missing. */
  root: string;
}

interface Sidecar {
  contentType: string;
  sha256: string;
  size: number;
  ino: number;
  mtimeMs: number;
}

function errno(e: unknown): string | undefined {
  return typeof e === "object" && e !== null && "code" in e ? String(e.code) : undefined;
}

function unavailable(what: string, key: string | undefined, e: unknown): ArtifactError {
  return new ArtifactError(
    "UNAVAILABLE",
    `${what} failed: ${e instanceof Error ? e.message : String(e)}`,
    key,
    { cause: e },
  );
}

/** Artifacts as files under a local folder. */
export class FilesystemArtifactStore implements ArtifactStore {
  readonly kind = "filesystem" as const;
  /** Absolute root folder. */
  readonly root: string;
  readonly #tmp: string;
  readonly #meta: string;
  /** The root's real path (it may be a link itself), read on first use. */
  #realRoot: Promise<string> | undefined;

  constructor(options: FilesystemArtifactStoreOptions) {
    this.root = resolve(options.root);
    this.#tmp = join(this.root, ".tmp");
    this.#meta = join(this.root, ".meta");
  }

  async ensureReady(): Promise<void> {
    try {
      await mkdir(this.#tmp, { recursive: true });
      await mkdir(this.#meta, { recursive: true });
    } catch (e) {
      throw unavailable(`creating the artifact folder ${this.root}`, undefined, e);
    }
  }

  /** The file of a key; the key is checked, and the path is checked to stay under the root. */
  #path(base: string, key: string): string {
    const path = resolve(base, ...checkKey(key).split("/"));
    if (!path.startsWith(base + sep))
      throw new ArtifactError("INVALID_KEY", `key ${JSON.stringify(key)} leaves the store's folder`, key);
    return path;
  }

  /**
   * Opens the object at `path` for reading, or undefined when there is none: not a regular file,
   * reached through a symbolic link at its last component, or lying outside the root's real path
   * (a link at one of its folders). The path the descriptor really names is read from
   * /proc/self/fd where there is one, so a link swapped in after the check cannot redirect it.
   */
  async #openInside(path: string): Promise<{ handle: FileHandle; info: Stats } | undefined> {
    let handle: FileHandle;
    try {
      // Non-blocking: a FIFO planted in the folder would hold a thread of the pool at open.
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      const code = errno(e);
      if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR" || code === "ELOOP") return undefined;
      throw e;
    }
    try {
      const info = await handle.stat();
      this.#realRoot ??= realpath(this.root).catch((e: unknown) => {
        this.#realRoot = undefined;
        throw e;
      });
      const root = await this.#realRoot;
      const real = await realpath(`/proc/self/fd/${handle.fd}`).catch(() => realpath(path));
      if (info.isFile() && real.startsWith(root + sep)) return { handle, info };
    } catch (e) {
      await handle.close();
      throw e;
    }
    await handle.close();
    return undefined;
  }

  async put(key: string, data: ArtifactData, options: PutOptions = {}): Promise<ArtifactRef> {
    const path = this.#path(this.root, key);
    const metaPath = this.#path(this.#meta, key);
    const contentType = checkContentType(options.contentType);
    const tmp = join(this.#tmp, randomUUID());
    let size: number;
    let sha256: string;
    try {
      await mkdir(this.#tmp, { recursive: true });
      if (isStream(data)) {
        const hasher = new HashingStream();
        await pipeline(data, hasher, createWriteStream(tmp, { flags: "wx" }));
        size = hasher.size;
        sha256 = hasher.sha256;
      } else {
        const buf = toBuffer(data);
        await writeFile(tmp, buf, { flag: "wx" });
        size = buf.length;
        sha256 = sha256Hex(buf);
      }
      const written = await stat(tmp);
      const sidecar: Sidecar = { contentType, sha256, size, ino: written.ino, mtimeMs: written.mtimeMs };
      await this.#mkdirs(dirname(path), key);
      await mkdir(dirname(metaPath), { recursive: true });
      await writeFile(`${tmp}.meta`, JSON.stringify(sidecar), { flag: "wx" });
      await rename(`${tmp}.meta`, metaPath);
      await rename(tmp, path);
      return artifactRef({ key, size, sha256, contentType, createTime: written.mtime });
    } catch (e) {
      await rm(tmp, { force: true });
      await rm(`${tmp}.meta`, { force: true });
      if (e instanceof ArtifactError) throw e;
      const code = errno(e);
      if (code === "EISDIR" || code === "ENOTDIR" || code === "EEXIST" || code === "ENOTEMPTY")
        throw new ArtifactError(
          "CONFLICT",
          `cannot store ${JSON.stringify(key)}: a folder and an object would share a path`,
          key,
          { cause: e },
        );
      throw unavailable(`storing ${JSON.stringify(key)}`, key, e);
    }
  }

  async #mkdirs(dir: string, key: string): Promise<void> {
    try {
      await mkdir(dir, { recursive: true });
    } catch (e) {
      const code = errno(e);
      if (code === "EEXIST" || code === "ENOTDIR")
        throw new ArtifactError(
          "CONFLICT",
          `cannot store ${JSON.stringify(key)}: an object is where its folder must be`,
          key,
          { cause: e },
        );
      throw e;
    }
  }

  async get(key: string): Promise<Readable> {
    const path = this.#path(this.root, key);
    let opened: { handle: FileHandle } | undefined;
    try {
      // Opened before returning, so a missing object rejects here and a concurrent overwrite
      // (rename) cannot mix two versions: the stream reads the file that was opened.
      opened = await this.#openInside(path);
    } catch (e) {
      throw unavailable(`reading ${JSON.stringify(key)}`, key, e);
    }
    if (opened === undefined) throw new ArtifactError("NOT_FOUND", `no artifact ${JSON.stringify(key)}`, key);
    return opened.handle.createReadStream();
  }

  async stat(key: string): Promise<ArtifactRef | undefined> {
    const path = this.#path(this.root, key);
    let opened: { handle: FileHandle; info: Stats } | undefined;
    try {
      opened = await this.#openInside(path);
    } catch (e) {
      throw unavailable(`reading ${JSON.stringify(key)}`, key, e);
    }
    if (opened === undefined) return undefined;
    const { handle, info } = opened;
    try {
      return await this.#ref(key, handle, info, true);
    } finally {
      await handle.close();
    }
  }

  /** The object's ref; without a trustworthy sidecar its data is hashed, read from `source`. */
  async #ref(key: string, source: string | FileHandle, info: Stats, metadata: boolean): Promise<ArtifactRef> {
    if (!metadata)
      return artifactRef({ key, size: info.size, sha256: "", contentType: "", createTime: info.mtime });
    const sidecar = await this.#sidecar(key);
    if (
      sidecar !== undefined &&
      sidecar.ino === info.ino &&
      sidecar.size === info.size &&
      sidecar.mtimeMs === info.mtimeMs
    ) {
      return artifactRef({
        key,
        size: info.size,
        sha256: sidecar.sha256,
        contentType: sidecar.contentType,
        createTime: info.mtime,
      });
    }
    // No trustworthy sidecar: hash the data itself.
    const hash = createHash("sha256");
    let size = 0;
    try {
      const data =
        typeof source === "string"
          ? createReadStream(source)
          : source.createReadStream({ autoClose: false, start: 0 });
      for await (const chunk of data) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    } catch (e) {
      throw unavailable(`reading ${JSON.stringify(key)}`, key, e);
    }
    return artifactRef({
      key,
      size,
      sha256: hash.digest("hex"),
      contentType: sidecar?.contentType ?? DEFAULT_CONTENT_TYPE,
      createTime: info.mtime,
    });
  }

  async #sidecar(key: string): Promise<Sidecar | undefined> {
    try {
      const parsed = JSON.parse(await readFile(this.#path(this.#meta, key), "utf8")) as Partial<Sidecar>;
      if (
        typeof parsed.contentType === "string" &&
        typeof parsed.sha256 === "string" &&
        typeof parsed.size === "number" &&
        typeof parsed.ino === "number" &&
        typeof parsed.mtimeMs === "number"
      )
        return parsed as Sidecar;
      return undefined;
    } catch {
      return undefined;
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ArtifactRef[]> {
    checkPrefix(prefix);
    const folder = prefix.slice(0, prefix.lastIndexOf("/") + 1);
    const start = folder === "" ? this.root : this.#path(this.root, folder.slice(0, -1));
    const found: { key: string; path: string; info: Stats }[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        const code = errno(e);
        if (code === "ENOENT" || code === "ENOTDIR") return;
        throw unavailable(`listing ${JSON.stringify(prefix)}`, undefined, e);
      }
      for (const entry of entries) {
        if (dir === this.root && entry.name.startsWith(".")) continue; // .tmp, .meta
        const path = join(dir, entry.name);
        const key = relative(this.root, path).split(sep).join("/");
        if (entry.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(path);
        } else if (entry.isFile() && key.startsWith(prefix)) {
          try {
            found.push({ key, path, info: await stat(path) });
          } catch (e) {
            if (errno(e) !== "ENOENT") throw unavailable(`listing ${JSON.stringify(prefix)}`, undefined, e);
          }
        }
      }
    };
    await walk(start);
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const metadata = options.metadata !== false;
    return Promise.all(found.map((f) => this.#ref(f.key, f.path, f.info, metadata)));
  }

  async presign(key: string, _ttlSeconds: number): Promise<PresignedUrl | undefined> {
    if ((await this.stat(key)) === undefined)
      throw new ArtifactError("NOT_FOUND", `no artifact ${JSON.stringify(key)}`, key);
    return undefined;
  }

  async delete(prefix = ""): Promise<number> {
    const refs = await this.list(prefix, { metadata: false });
    const folders = new Set<string>();
    for (const { key } of refs) {
      const path = this.#path(this.root, key);
      try {
        await unlink(path);
        await rm(this.#path(this.#meta, key), { force: true });
      } catch (e) {
        if (errno(e) !== "ENOENT") throw unavailable(`deleting ${JSON.stringify(key)}`, key, e);
      }
      folders.add(dirname(path));
      folders.add(dirname(this.#path(this.#meta, key)));
    }
    // Prune the folders left empty, deepest first; a folder that is not empty stops the climb.
    for (const start of [...folders].sort((a, b) => b.length - a.length)) {
      for (
        let dir = start;
        dir !== this.root && dir !== this.#meta && dir.startsWith(this.root + sep);
        dir = dirname(dir)
      ) {
        try {
          await rmdir(dir);
        } catch {
          break;
        }
      }
    }
    return refs.length;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
