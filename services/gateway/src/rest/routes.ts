/**
 * REST routes compiled from the `google.api.http` options of service methods: one route per HTTP
 * rule and per additional binding, validated against the request message when compiled (a path
 * variable or body naming a field that does not exist fails at start, not on the first request).
 */
import {
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  getOption,
  hasOption,
} from "@bufbuild/protobuf";
import { http } from "@nexusflow/gen/google/api/annotations_pb";
import type { HttpRule } from "@nexusflow/gen/google/api/http_pb";
import { type PathTemplate, matchPathTemplate, parsePathTemplate, templateRank } from "./template.js";

/** One HTTP binding of an RPC. */
export interface RestRoute {
  readonly service: DescService;
  readonly method: DescMethod;
  /** Upper-case HTTP method, e.g. "GET". */
  readonly httpMethod: string;
  readonly template: PathTemplate;
  /** "" (no body), "*" (the whole request) or the name of the request field the body fills. */
  readonly body: string;
  /** "" (the whole response) or the name of the response field sent as the body. */
  readonly responseBody: string;
}

/** A binding that cannot work with its messages; the message names the method and the rule. */
export class RestRouteError extends Error {
  override name = "RestRouteError";
}

/** The fields along a dotted path of proto field names (or JSON names), or undefined if any is missing. */
export function resolveFieldPath(message: DescMessage, path: readonly string[]): DescField[] | undefined {
  const fields: DescField[] = [];
  let current: DescMessage | undefined = message;
  for (const name of path) {
    if (current === undefined) return undefined;
    const field: DescField | undefined = current.fields.find((f) => f.name === name || f.jsonName === name);
    if (field === undefined) return undefined;
    fields.push(field);
    current = field.fieldKind === "message" && !isLeafMessage(field.message) ? field.message : undefined;
  }
  return fields;
}

/** Messages written as one JSON primitive (a string or number), so they can be a path or query value. */
const LEAF_MESSAGES = new Set([
  "google.protobuf.Timestamp",
  "google.protobuf.Duration",
  "google.protobuf.FieldMask",
  "google.protobuf.StringValue",
  "google.protobuf.BytesValue",
  "google.protobuf.BoolValue",
  "google.protobuf.Int32Value",
  "google.protobuf.Int64Value",
  "google.protobuf.UInt32Value",
  "google.protobuf.UInt64Value",
  "google.protobuf.FloatValue",
  "google.protobuf.DoubleValue",
]);

/** Whether a message type is written as a JSON primitive. */
export function isLeafMessage(message: DescMessage): boolean {
  return LEAF_MESSAGES.has(message.typeName);
}

function patternOf(rule: HttpRule): { httpMethod: string; path: string } | undefined {
  const p = rule.pattern;
  switch (p.case) {
    case "get":
    case "put":
    case "post":
    case "delete":
    case "patch":
      return { httpMethod: p.case.toUpperCase(), path: p.value };
    case "custom":
      return { httpMethod: p.value.kind.toUpperCase(), path: p.value.path };
    default:
      return undefined;
  }
}

function compileRule(service: DescService, method: DescMethod, rule: HttpRule): RestRoute {
  const where = `${service.typeName}.${method.name} (${JSON.stringify(rule.pattern.value)})`;
  const pattern = patternOf(rule);
  if (pattern === undefined) throw new RestRouteError(`${where}: the HTTP rule has no pattern`);
  let template: PathTemplate;
  try {
    template = parsePathTemplate(pattern.path);
  } catch (e) {
    throw new RestRouteError(`${where}: ${(e as Error).message}`, { cause: e });
  }
  for (const v of template.variables) {
    const fields = resolveFieldPath(method.input, v.fieldPath);
    const leaf = fields?.[fields.length - 1];
    if (leaf === undefined || leaf.fieldKind === "list" || leaf.fieldKind === "map") {
      throw new RestRouteError(
        `${where}: path variable ${v.fieldPath.join(".")} is not a singular field of ${method.input.typeName}`,
      );
    }
  }
  if (rule.body !== "" && rule.body !== "*" && resolveFieldPath(method.input, [rule.body]) === undefined) {
    throw new RestRouteError(`${where}: body field ${rule.body} is not a field of ${method.input.typeName}`);
  }
  if (rule.responseBody !== "" && resolveFieldPath(method.output, [rule.responseBody]) === undefined) {
    throw new RestRouteError(
      `${where}: response_body ${rule.responseBody} is not a field of ${method.output.typeName}`,
    );
  }
  if (method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming") {
    throw new RestRouteError(`${where}: client streaming cannot be mapped to REST`);
  }
  return {
    service,
    method,
    httpMethod: pattern.httpMethod,
    template,
    body: rule.body,
    responseBody: rule.responseBody,
  };
}

function compareRoutes(a: RestRoute, b: RestRoute): number {
  const ra = templateRank(a.template);
  const rb = templateRank(b.template);
  for (let i = 0; i < ra.length; i++) {
    const d = (rb[i] as number) - (ra[i] as number);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * The routes of every annotated method of `services`, most specific template first. Methods
 * without `google.api.http` have none. Throws {@link RestRouteError} for a rule that cannot work.
 */
export function compileRoutes(services: readonly DescService[]): RestRoute[] {
  const routes: RestRoute[] = [];
  for (const service of services) {
    for (const method of service.methods) {
      if (!hasOption(method, http)) continue;
      const rule = getOption(method, http);
      routes.push(compileRule(service, method, rule));
      // Bindings nested inside additional bindings are ignored, as the spec says.
      for (const extra of rule.additionalBindings) routes.push(compileRule(service, method, extra));
    }
  }
  return routes.sort(compareRoutes);
}

/** The outcome of {@link matchRoute}. */
export type RouteMatch =
  | { readonly kind: "match"; readonly route: RestRoute; readonly params: ReadonlyMap<string, string> }
  | { readonly kind: "method-not-allowed"; readonly allowed: readonly string[] }
  | { readonly kind: "none" };

/** Finds the route for a request; `path` is the raw path without the query. */
export function matchRoute(routes: readonly RestRoute[], httpMethod: string, path: string): RouteMatch {
  const allowed = new Set<string>();
  const method = httpMethod.toUpperCase();
  // Routes with a custom verb come first; once one matches the path, a verb-less template that
  // would take "id:verb" as its variable is not a candidate (GET /v1/runs/x:cancel is not GetRun).
  let verbMatched = false;
  for (const route of routes) {
    if (verbMatched && route.template.verb === undefined) break;
    const params = matchPathTemplate(route.template, path);
    if (params === undefined) continue;
    if (route.template.verb !== undefined) verbMatched = true;
    if (route.httpMethod === method) return { kind: "match", route, params };
    allowed.add(route.httpMethod);
  }
  return allowed.size > 0 ? { kind: "method-not-allowed", allowed: [...allowed].sort() } : { kind: "none" };
}
