/** Which session protocol version the executor attaches with after a refusal (scheduler-session.ts). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { versionRefusal } from "@nexusflow/common";
import { fallbackVersion } from "./scheduler-session.js";

const refused = (details: string, code = grpc.status.FAILED_PRECONDITION) => ({
  attached: false,
  code,
  details,
});

describe("fallbackVersion", () => {
  it("takes the highest version the refusal names, below the one offered", () => {
    assert.equal(fallbackVersion(refused(versionRefusal(3, 1, 2)), 3), 2);
    assert.equal(fallbackVersion(refused(versionRefusal(3, 1, 1)), 3), 1);
    assert.equal(fallbackVersion(refused(versionRefusal(2, 1, 1)), 2), 1);
  });

  it("tries the version below the one offered when the refusal does not name the versions", () => {
    assert.equal(fallbackVersion(refused("attach.protocol_version: not spoken here"), 3), 2);
    assert.equal(fallbackVersion(refused("attach.protocol_version: not spoken here"), 2), 1);
    assert.equal(fallbackVersion(refused("attach.protocol_version: not spoken here"), 1), undefined);
  });

  it("gives up when no version of its own is left, or the end was no version refusal", () => {
    // Only newer versions, or a range that does not go lower.
    assert.equal(fallbackVersion(refused(versionRefusal(3, 4, 9)), 3), undefined);
    assert.equal(fallbackVersion(refused(versionRefusal(2, 1, 3)), 2), undefined);
    assert.equal(fallbackVersion(refused(versionRefusal(3, 0, 0)), 3), undefined);
    assert.equal(
      fallbackVersion(refused(versionRefusal(3, 1, 2), grpc.status.INVALID_ARGUMENT), 3),
      undefined,
    );
    assert.equal(fallbackVersion(refused("the first message of a session must be attach"), 3), undefined);
    assert.equal(fallbackVersion({ ...refused(versionRefusal(3, 1, 2)), attached: true }, 3), undefined);
  });
});
