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
 * Nothing the store does leaves its folder or follows a symbolic link below the root (the root
 * itself may be one): a link planted there, to a folder or a file outside or to another run's
 * folder, is never written, read, listed or deleted through.
 * - Reads open the object without following a link at its last component, and the file actually
 *   opened must be the one its key names under the root's real path.
 * - Writes, listings and deletes reach a folder one component at a time from the root, each
 *   opened with O_NOFOLLOW | O_DIRECTORY, and name the next component through the descriptor of
 *   the folder opened (`/proc/self/fd/{fd}/{name}`, as openat would), so a link swapped in after
 *   a check cannot redirect them. A write meeting a link where a folder of its key must be is
 *   refused (CONFLICT); a listing skips links; a delete removes the link itself.
 * - Without /proc/self/fd (not Linux) the folders are named by path, and each one opened is
 *   checked to have the real path its key names before it is used; a link swapped in between that
 *   check and the write remains possible there.
 */
import { createHash, randomUUID } from "node:crypto";
import { constants, createWriteStream, type Stats } from "node:fs";
import {
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  rmdir,
  unlink,
  writeFile,
} from "node:fs/promises";
import { basename, join, resolve, sep } from "node:path";
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
  /**
   * Name folders through /proc/self/fd where that works (Linux). False takes the path-checking
   * way of systems without it (for tests).
   * @default true
   */
  useProcFd?: boolean | undefined;
}

interface Sidecar {
  contentType: string;
  sha256: string;
  size: number;
  ino: number;
  mtimeMs: number;
}

/** A folder of the store, opened without following a link. */
interface Folder {
  readonly handle: FileHandle;
  /** What names it in calls that take a path: `/proc/self/fd/{fd}`, or `path` without /proc. */
  readonly dir: string;
  /** Its path under the root's real path. */
  readonly path: string;
}

/** A folder opened, or what stands at its name instead. */
type Child = Folder | "missing" | "link" | "other";

/**
 * Called by a walk for each regular file and each symbolic link whose key matches, with the folder
 * holding it; resolves to whether it removed the entry (so the walk prunes the folders emptied).
 */
type Visit = (folder: Folder, name: string, key: string, kind: "file" | "link") => Promise<boolean>;

/** Folders of the store's own under the root: writes in progress, sidecars. */
const TMP = ".tmp";
const META = ".meta";
const DIRECTORY = constants.O_RDONLY | constants.O_DIRECTORY;
const NO_FOLLOW_DIRECTORY = DIRECTORY | constants.O_NOFOLLOW;

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

/** Whether two paths name the same bytes (as the system sees them: UTF-8). */
function samePath(a: string, b: string): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}

/** Maps `items` with at most `limit` calls of `fn` running at a time, in their order. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function closeQuietly(folder: Folder | undefined): Promise<void> {
  await folder?.handle.close().catch(() => undefined);
}

/** Artifacts as files under a local folder. */
export class FilesystemArtifactStore implements ArtifactStore {
  readonly kind = "filesystem" as const;
  /** Absolute root folder. */
  readonly root: string;
  readonly #useProcFd: boolean;
  /** The root's real path (it may be a link itself) and whether /proc/self/fd names folders; found on first use. */
  #base: { real: string; proc: boolean } | undefined;

  constructor(options: FilesystemArtifactStoreOptions) {
    this.root = resolve(options.root);
    this.#useProcFd = options.useProcFd !== false;
  }

  async ensureReady(): Promise<void> {
    try {
      for (const folder of [TMP, META]) await closeQuietly(await this.#openFolder([folder]));
    } catch (e) {
      throw unavailable(`creating the artifact folder ${this.root}`, undefined, e);
    }
  }

  /** The segments of a key's path; the key is checked, and the path is checked to stay under the root. */
  #parts(key: string): string[] {
    const parts = checkKey(key).split("/");
    if (!resolve(this.root, ...parts).startsWith(this.root + sep))
      throw new ArtifactError("INVALID_KEY", `key ${JSON.stringify(key)} leaves the store's folder`, key);
    return parts;
  }

  /** The root's real path and how folders are named; undefined when it is missing and not `create`d. */
  async #rootInfo(create: boolean): Promise<{ real: string; proc: boolean } | undefined> {
    if (this.#base !== undefined) return this.#base;
    let real: string;
    try {
      real = await realpath(this.root);
    } catch (e) {
      if (errno(e) !== "ENOENT") throw e;
      if (!create) return undefined;
      await mkdir(this.root, { recursive: true });
      real = await realpath(this.root);
    }
    let proc = false;
    if (this.#useProcFd) {
      const handle = await open(real, DIRECTORY);
      try {
        proc = samePath(await realpath(`/proc/self/fd/${handle.fd}`).catch(() => ""), real);
      } finally {
        await handle.close();
      }
    }
    this.#base ??= { real, proc };
    return this.#base;
  }

  /** The root folder opened; undefined when it is missing and not `create`d. */
  async #openRoot(create: boolean): Promise<Folder | undefined> {
    const base = await this.#rootInfo(create);
    if (base === undefined) return undefined;
    let handle: FileHandle;
    try {
      handle = await open(base.real, NO_FOLLOW_DIRECTORY);
    } catch (e) {
      if (errno(e) !== "ENOENT") throw e;
      if (!create) return undefined;
      // Removed since it was first found: made again, as at first use.
      await mkdir(base.real, { recursive: true });
      handle = await open(base.real, NO_FOLLOW_DIRECTORY);
    }
    return { handle, dir: base.proc ? `/proc/self/fd/${handle.fd}` : base.real, path: base.real };
  }

  /**
   * Opens the folder `name` of `parent` without following a link (made first when missing and
   * `create`), or tells what stands there instead. Without /proc/self/fd the folder opened must
   * have the real path its name gives under the root's real path.
   */
  async #openChild(parent: Folder, name: string, create: boolean): Promise<Child> {
    const at = `${parent.dir}/${name}`;
    const path = join(parent.path, name);
    for (let made = 0; ; made++) {
      let handle: FileHandle;
      try {
        handle = await open(at, NO_FOLLOW_DIRECTORY);
      } catch (e) {
        const code = errno(e);
        if (code === "ENOENT" && create && made < 3) {
          // mkdir does not follow a link at its last component: one there fails EEXIST.
          await mkdir(at).catch((e2: unknown) => {
            if (errno(e2) !== "EEXIST") throw e2;
          });
          continue;
        }
        if (code === "ENOENT") return "missing";
        if (code === "ENOTDIR" || code === "ELOOP") {
          const info = await lstat(at).catch(() => undefined);
          return info === undefined ? "missing" : info.isSymbolicLink() ? "link" : "other";
        }
        throw e;
      }
      if (this.#base?.proc === true) return { handle, dir: `/proc/self/fd/${handle.fd}`, path };
      const real = await realpath(path).catch(() => undefined);
      if (real !== undefined && samePath(real, path)) return { handle, dir: path, path };
      await handle.close();
      return "link";
    }
  }

  /**
   * Opens the folders `parts` below the root one after the other, making the missing ones, never
   * through a link. Throws {@link ArtifactError} CONFLICT when one of them is a link or not a
   * folder (`key`, when given, is the object being stored).
   */
  async #openFolder(parts: readonly string[], key?: string): Promise<Folder> {
    let folder = await this.#openRoot(true);
    for (const [i, name] of parts.entries()) {
      if (folder === undefined) break;
      let child: Child;
      try {
        child = await this.#openChild(folder, name, true);
      } finally {
        await closeQuietly(folder);
      }
      if (typeof child !== "string") {
        folder = child;
        continue;
      }
      const where = parts.slice(0, i + 1).join("/");
      const storing = key === undefined ? "" : `cannot store ${JSON.stringify(key)}: `;
      if (child === "link")
        throw new ArtifactError("CONFLICT", `${storing}${where} is a symbolic link, not a folder`, key);
      if (child === "other")
        throw new ArtifactError(
          "CONFLICT",
          `${storing}an object is where its folder must be (${where})`,
          key,
        );
      folder = undefined;
    }
    if (folder === undefined)
      throw new ArtifactError("UNAVAILABLE", `the folder ${parts.join("/")} vanished while it was made`, key);
    return folder;
  }

  /**
   * Opens the object `key` below the folder `base` (the root, or .meta) for reading, or undefined
   * when there is none: not a regular file, reached through a symbolic link, or not the file its
   * key names under the root's real path. The path the descriptor really names is read from
   * /proc/self/fd where there is one, so a link swapped in after the check cannot redirect it.
   */
  async #openObject(
    base: readonly string[],
    key: string,
  ): Promise<{ handle: FileHandle; info: Stats } | undefined> {
    const root = await this.#rootInfo(false);
    if (root === undefined) return undefined;
    const path = join(root.real, ...base, ...key.split("/"));
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
      const real = await realpath(`/proc/self/fd/${handle.fd}`).catch(() => realpath(path));
      // A file replaced (renamed over) since it was opened still is the one its key named.
      if (info.isFile() && (samePath(real, path) || samePath(real, `${path} (deleted)`)))
        return { handle, info };
    } catch (e) {
      await handle.close();
      throw e;
    }
    await handle.close();
    return undefined;
  }

  async put(key: string, data: ArtifactData, options: PutOptions = {}): Promise<ArtifactRef> {
    const parts = this.#parts(key);
    const name = parts[parts.length - 1] ?? "";
    const folders = parts.slice(0, -1);
    const contentType = checkContentType(options.contentType);
    const id = randomUUID();
    const opened: Folder[] = [];
    try {
      const tmp = await this.#openFolder([TMP], key);
      opened.push(tmp);
      const file = `${tmp.dir}/${id}`;
      const sidecarFile = `${file}.meta`;
      try {
        let size: number;
        let sha256: string;
        if (isStream(data)) {
          const hasher = new HashingStream();
          await pipeline(data, hasher, createWriteStream(file, { flags: "wx" }));
          size = hasher.size;
          sha256 = hasher.sha256;
        } else {
          const buf = toBuffer(data);
          await writeFile(file, buf, { flag: "wx" });
          size = buf.length;
          sha256 = sha256Hex(buf);
        }
        const written = await lstat(file);
        const sidecar: Sidecar = { contentType, sha256, size, ino: written.ino, mtimeMs: written.mtimeMs };
        const target = await this.#openFolder(folders, key);
        opened.push(target);
        const meta = await this.#openFolder([META, ...folders], key);
        opened.push(meta);
        await writeFile(sidecarFile, JSON.stringify(sidecar), { flag: "wx" });
        // rename replaces a link at the last component; it never writes through one.
        await rename(sidecarFile, `${meta.dir}/${name}`);
        await rename(file, `${target.dir}/${name}`);
        return artifactRef({ key, size, sha256, contentType, createTime: written.mtime });
      } catch (e) {
        await unlink(file).catch(() => undefined);
        await unlink(sidecarFile).catch(() => undefined);
        throw e;
      }
    } catch (e) {
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
    } finally {
      for (const folder of opened) await closeQuietly(folder);
    }
  }

  async get(key: string): Promise<Readable> {
    this.#parts(key);
    let opened: { handle: FileHandle } | undefined;
    try {
      // Opened before returning, so a missing object rejects here and a concurrent overwrite
      // (rename) cannot mix two versions: the stream reads the file that was opened.
      opened = await this.#openObject([], key);
    } catch (e) {
      throw unavailable(`reading ${JSON.stringify(key)}`, key, e);
    }
    if (opened === undefined) throw new ArtifactError("NOT_FOUND", `no artifact ${JSON.stringify(key)}`, key);
    return opened.handle.createReadStream();
  }

  async stat(key: string): Promise<ArtifactRef | undefined> {
    this.#parts(key);
    let opened: { handle: FileHandle; info: Stats } | undefined;
    try {
      opened = await this.#openObject([], key);
    } catch (e) {
      throw unavailable(`reading ${JSON.stringify(key)}`, key, e);
    }
    if (opened === undefined) return undefined;
    const { handle, info } = opened;
    try {
      return await this.#ref(key, handle, info);
    } finally {
      await handle.close();
    }
  }

  /** The ref of the object open in `handle`; without a trustworthy sidecar its data is hashed. */
  async #ref(key: string, handle: FileHandle, info: Stats): Promise<ArtifactRef> {
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
      for await (const chunk of handle.createReadStream({ autoClose: false, start: 0 })) {
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
      const opened = await this.#openObject([META], key);
      if (opened === undefined) return undefined;
      let text: string;
      try {
        text = await opened.handle.readFile("utf8");
      } finally {
        await opened.handle.close();
      }
      const parsed = JSON.parse(text) as Partial<Sidecar>;
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

  /**
   * Walks the folder `base` below the root (the root itself, or .meta) for the entries whose keys
   * match `prefix`, never through a link: `visit` is called for each regular file whose key starts
   * with `prefix` and for each symbolic link every key under which would (a link to a folder is not
   * descended into). Folders left empty by what `visit` removed are removed too, up to `base`.
   * Resolves to whether anything was removed.
   */
  async #walk(base: readonly string[], prefix: string, visit: Visit): Promise<boolean> {
    const start = prefix
      .slice(0, prefix.lastIndexOf("/") + 1)
      .split("/")
      .slice(0, -1);
    // The folders from the root down to the prefix's, each held open while below it is walked.
    const chain: Folder[] = [];
    const descend = async (folder: Folder, keyParts: readonly string[]): Promise<boolean> => {
      let entries;
      try {
        entries = await readdir(folder.dir, { withFileTypes: true });
      } catch (e) {
        const code = errno(e);
        if (code === "ENOENT" || code === "ENOTDIR") return false;
        throw e;
      }
      let removed = false;
      for (const entry of entries) {
        // The store's own folders (.tmp, .meta) at the root: no key begins with ".".
        if (keyParts.length === 0 && entry.name.startsWith(".")) continue;
        const key = [...keyParts, entry.name].join("/");
        if (entry.isDirectory()) {
          if (!key.startsWith(prefix) && !prefix.startsWith(`${key}/`)) continue;
          const child = await this.#openChild(folder, entry.name, false);
          if (child === "link") {
            if (`${key}/`.startsWith(prefix) && (await visit(folder, entry.name, key, "link")))
              removed = true;
          } else if (typeof child !== "string") {
            let below: boolean;
            try {
              below = await descend(child, [...keyParts, entry.name]);
            } finally {
              await closeQuietly(child);
            }
            if (below) {
              removed = true;
              await rmdir(`${folder.dir}/${entry.name}`).catch(() => undefined);
            }
          }
        } else if (entry.isSymbolicLink()) {
          if (`${key}/`.startsWith(prefix) && (await visit(folder, entry.name, key, "link"))) removed = true;
        } else if (entry.isFile() && key.startsWith(prefix)) {
          if (await visit(folder, entry.name, key, "file")) removed = true;
        }
      }
      return removed;
    };
    try {
      const root = await this.#openRoot(false);
      if (root === undefined) return false;
      chain.push(root);
      for (const [i, name] of [...base, ...start].entries()) {
        const parent = chain[chain.length - 1] as Folder;
        const child = await this.#openChild(parent, name, false);
        if (typeof child !== "string") {
          chain.push(child);
          continue;
        }
        // A link standing where a folder of the prefix is: removed when all below it matches.
        const keyParts = start.slice(0, i - base.length + 1);
        if (child === "link" && i >= base.length && `${keyParts.join("/")}/`.startsWith(prefix)) {
          if (await visit(parent, name, keyParts.join("/"), "link")) {
            await this.#prune(chain, base.length + 1);
            return true;
          }
        }
        return false;
      }
      const removed = await descend(chain[chain.length - 1] as Folder, start);
      if (removed) await this.#prune(chain, base.length + 1);
      return removed;
    } finally {
      for (const folder of chain) await closeQuietly(folder);
    }
  }

  /**
   * Removes the folders of `chain` (each the parent's next, from the root) left empty, deepest
   * first, stopping at one that is not; the first `keep` (the root, .meta) stay.
   */
  async #prune(chain: readonly Folder[], keep: number): Promise<void> {
    for (let i = chain.length - 1; i >= Math.max(keep, 1); i--) {
      const parent = chain[i - 1] as Folder;
      const folder = chain[i] as Folder;
      try {
        await rmdir(`${parent.dir}/${basename(folder.path)}`);
      } catch {
        break;
      }
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ArtifactRef[]> {
    checkPrefix(prefix);
    const found: { key: string; info: Stats }[] = [];
    try {
      await this.#walk([], prefix, async (folder, name, key, kind) => {
        if (kind !== "file") return false;
        try {
          const info = await lstat(`${folder.dir}/${name}`);
          if (info.isFile()) found.push({ key, info });
        } catch (e) {
          if (errno(e) !== "ENOENT") throw e;
        }
        return false;
      });
    } catch (e) {
      throw unavailable(`listing ${JSON.stringify(prefix)}`, undefined, e);
    }
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (options.metadata === false)
      return found.map(({ key, info }) =>
        artifactRef({ key, size: info.size, sha256: "", contentType: "", createTime: info.mtime }),
      );
    // Each ref holds the object open while its sidecar is read: a bounded number at a time.
    const refs = await mapLimited(found, 32, async ({ key }) => {
      let opened: { handle: FileHandle; info: Stats } | undefined;
      try {
        opened = await this.#openObject([], key);
      } catch (e) {
        throw unavailable(`listing ${JSON.stringify(prefix)}`, undefined, e);
      }
      // Gone, or replaced by a link, since the walk: not listed.
      if (opened === undefined) return undefined;
      try {
        return await this.#ref(key, opened.handle, opened.info);
      } finally {
        await opened.handle.close();
      }
    });
    return refs.filter((ref) => ref !== undefined);
  }

  async presign(key: string, _ttlSeconds: number): Promise<PresignedUrl | undefined> {
    if ((await this.stat(key)) === undefined)
      throw new ArtifactError("NOT_FOUND", `no artifact ${JSON.stringify(key)}`, key);
    return undefined;
  }

  async delete(prefix = ""): Promise<number> {
    checkPrefix(prefix);
    let deleted = 0;
    // unlink removes a link itself, never what it points to.
    const remove =
      (count: boolean): Visit =>
      async (folder, name, key, kind) => {
        try {
          await unlink(`${folder.dir}/${name}`);
        } catch (e) {
          if (errno(e) === "ENOENT") return false;
          throw unavailable(`deleting ${JSON.stringify(key)}`, key, e);
        }
        if (count && kind === "file") deleted++;
        return true;
      };
    try {
      await this.#walk([], prefix, remove(true));
      // The sidecars of what was deleted (and any left without their object).
      await this.#walk([META], prefix, remove(false));
    } catch (e) {
      if (e instanceof ArtifactError) throw e;
      throw unavailable(`deleting ${JSON.stringify(prefix)}`, undefined, e);
    }
    return deleted;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
