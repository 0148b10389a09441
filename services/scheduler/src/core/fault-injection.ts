/**
 * Faults injected into the rules for tests (engine/faults.test.ts, engine/confined-inputs.test.ts,
 * core/crossings.test.ts): a property of a run's or task's state that throws once, as a bug in the
 * rules reading or writing it would.
 */

/**
 * Makes `obj[key]` throw `message` once, the first time it is read (`on: "get"`), written
 * (`"set"`) or either (`"both"`) while `when()` holds; it reads and writes as before otherwise.
 */
export function throwOnce<T extends object>(
  obj: T,
  key: keyof T & string,
  on: "get" | "set" | "both",
  when: () => boolean,
  message: string,
): void {
  let value = obj[key];
  let thrown = false;
  const strike = (): void => {
    if (thrown || !when()) return;
    thrown = true;
    throw new Error(message);
  };
  Object.defineProperty(obj, key, {
    configurable: true,
    enumerable: true,
    get: () => {
      if (on !== "set") strike();
      return value;
    },
    set: (v: T[keyof T & string]) => {
      if (on !== "get") strike();
      value = v;
    },
  });
}
