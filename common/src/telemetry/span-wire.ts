/**
 * Ended spans as the service's thread hands them to the export thread (./export-worker.ts): plain
 * arrays and objects that `postMessage` copies (structured clone), and back into the
 * `ReadableSpan`s the OTLP exporter serializes. Everything the OTLP serializer reads survives the
 * trip: ids, trace state, parent (and whether it is remote), name, kind, times, attributes,
 * events, links, status, the dropped counts, the resource and the instrumentation scope. A
 * resource or scope is sent once per export thread, under a number, and shared again by the spans
 * naming it (the serializer groups spans by their identity).
 */
import {
  type Attributes,
  type HrTime,
  type Link,
  type SpanContext,
  type SpanKind,
  type SpanStatus,
  createTraceState,
} from "@opentelemetry/api";
import type { ReadableSpan, TimedEvent } from "@opentelemetry/sdk-trace";

/** A resource as sent: its attributes and schema URL. */
export interface WireResource {
  attributes: Attributes;
  schemaUrl?: string;
}

/** An instrumentation scope as sent. */
export interface WireScope {
  name: string;
  version?: string;
  schemaUrl?: string;
}

/** A link as sent: the linked span's context with its trace state serialized. */
export interface WireLink {
  traceId: string;
  spanId: string;
  traceFlags: number;
  isRemote?: boolean;
  traceState?: string;
  attributes?: Attributes;
  droppedAttributesCount?: number;
}

/**
 * An ended span as sent (an array: no key names to copy): trace id, span id, trace flags, trace
 * state, parent span id, parent is remote, name, kind, start, end, attributes, dropped attributes,
 * events, dropped events, links, dropped links, status, resource number, scope number.
 */
export type WireSpan = [
  traceId: string,
  spanId: string,
  traceFlags: number,
  traceState: string | undefined,
  parentSpanId: string | undefined,
  parentIsRemote: boolean | undefined,
  name: string,
  kind: SpanKind,
  startTime: HrTime,
  endTime: HrTime,
  attributes: Attributes,
  droppedAttributesCount: number,
  events: TimedEvent[],
  droppedEventsCount: number,
  links: WireLink[] | undefined,
  droppedLinksCount: number,
  status: SpanStatus,
  resource: number,
  scope: number,
];

/** A batch of ended spans, with the resources and scopes the export thread has not seen yet. */
export interface WireBatch {
  resources: [number, WireResource][];
  scopes: [number, WireScope][];
  spans: WireSpan[];
}

/** Numbers the resources and scopes of the spans, and sends each to an export thread once. */
export class WireEncoder {
  private readonly ids = new WeakMap<object, number>();
  private readonly resources: WireResource[] = [];
  private readonly scopes: WireScope[] = [];
  /** Resource and scope numbers the current export thread has been sent (scopes negated). */
  private readonly known = new Set<number>();

  /** The span as sent. */
  encode(span: ReadableSpan): WireSpan {
    const sc = span.spanContext();
    const parent = span.parentSpanContext;
    const links = span.links.length === 0 ? undefined : span.links.map(encodeLink);
    return [
      sc.traceId,
      sc.spanId,
      sc.traceFlags,
      sc.traceState?.serialize(),
      parent?.spanId,
      parent?.isRemote,
      span.name,
      span.kind,
      span.startTime,
      span.endTime,
      span.attributes,
      span.droppedAttributesCount,
      span.events,
      span.droppedEventsCount,
      links,
      span.droppedLinksCount,
      span.status,
      this.resourceId(span.resource),
      this.scopeId(span.instrumentationScope),
    ];
  }

  /** The batch of `spans`, with the resources and scopes the export thread has not been sent. */
  batch(spans: WireSpan[]): WireBatch {
    const batch: WireBatch = { resources: [], scopes: [], spans };
    for (const span of spans) {
      const resource = span[17];
      if (!this.known.has(resource)) {
        this.known.add(resource);
        batch.resources.push([resource, this.resources[resource]!]);
      }
      const scope = span[18];
      if (!this.known.has(-1 - scope)) {
        this.known.add(-1 - scope);
        batch.scopes.push([scope, this.scopes[scope]!]);
      }
    }
    return batch;
  }

  /** A new export thread: it has been sent no resource or scope. */
  reset(): void {
    this.known.clear();
  }

  private resourceId(resource: ReadableSpan["resource"]): number {
    const id = this.ids.get(resource);
    if (id !== undefined) return id;
    const wire: WireResource = { attributes: resource.attributes };
    if (resource.schemaUrl !== undefined) wire.schemaUrl = resource.schemaUrl;
    this.ids.set(resource, this.resources.length);
    return this.resources.push(wire) - 1;
  }

  private scopeId(scope: ReadableSpan["instrumentationScope"]): number {
    const id = this.ids.get(scope);
    if (id !== undefined) return id;
    const wire: WireScope = { name: scope.name };
    if (scope.version !== undefined) wire.version = scope.version;
    if (scope.schemaUrl !== undefined) wire.schemaUrl = scope.schemaUrl;
    this.ids.set(scope, this.scopes.length);
    return this.scopes.push(wire) - 1;
  }
}

function encodeLink(link: Link): WireLink {
  const { traceId, spanId, traceFlags, isRemote, traceState } = link.context;
  const wire: WireLink = { traceId, spanId, traceFlags };
  if (isRemote !== undefined) wire.isRemote = isRemote;
  const state = traceState?.serialize();
  if (state !== undefined) wire.traceState = state;
  if (link.attributes !== undefined) wire.attributes = link.attributes;
  if (link.droppedAttributesCount !== undefined) wire.droppedAttributesCount = link.droppedAttributesCount;
  return wire;
}

/** Turns the batches one export thread receives back into spans (keeps their resources and scopes). */
export class WireDecoder {
  private readonly resources = new Map<number, ReadableSpan["resource"]>();
  private readonly scopes = new Map<number, ReadableSpan["instrumentationScope"]>();

  decode(batch: WireBatch): ReadableSpan[] {
    for (const [id, r] of batch.resources) {
      // What the OTLP serializer reads of a resource: its attributes and schema URL (a plain
      // object instead of the SDK's class, which this thread does not load).
      const resource = {
        attributes: r.attributes,
        schemaUrl: r.schemaUrl,
        asyncAttributesPending: false,
        getRawAttributes: () => Object.entries(r.attributes),
        merge: () => resource,
      };
      this.resources.set(id, resource as unknown as ReadableSpan["resource"]);
    }
    for (const [id, s] of batch.scopes) this.scopes.set(id, s);
    return batch.spans.map((w) => this.span(w));
  }

  private span(w: WireSpan): ReadableSpan {
    const [traceId, spanId, traceFlags, traceState, parentSpanId, parentIsRemote] = w;
    const sc: SpanContext = { traceId, spanId, traceFlags };
    if (traceState !== undefined) sc.traceState = createTraceState(traceState);
    const resource = this.resources.get(w[17]);
    const scope = this.scopes.get(w[18]);
    if (resource === undefined || scope === undefined)
      throw new Error(`span ${spanId}: unknown resource ${w[17]} or scope ${w[18]}`);
    const startTime = w[8];
    const endTime = w[9];
    const span: ReadableSpan = {
      name: w[6],
      kind: w[7],
      spanContext: () => sc,
      startTime,
      endTime,
      status: w[16],
      attributes: w[10],
      links: (w[14] ?? []).map(decodeLink),
      events: w[12],
      duration: duration(startTime, endTime),
      ended: true,
      resource,
      instrumentationScope: scope,
      droppedAttributesCount: w[11],
      droppedEventsCount: w[13],
      droppedLinksCount: w[15],
    };
    if (parentSpanId !== undefined) {
      const parent: SpanContext = { traceId, spanId: parentSpanId, traceFlags };
      if (parentIsRemote !== undefined) parent.isRemote = parentIsRemote;
      return { ...span, parentSpanContext: parent };
    }
    return span;
  }
}

function decodeLink(w: WireLink): Link {
  const context: SpanContext = { traceId: w.traceId, spanId: w.spanId, traceFlags: w.traceFlags };
  if (w.isRemote !== undefined) context.isRemote = w.isRemote;
  if (w.traceState !== undefined) context.traceState = createTraceState(w.traceState);
  const link: Link = { context };
  if (w.attributes !== undefined) link.attributes = w.attributes;
  if (w.droppedAttributesCount !== undefined) link.droppedAttributesCount = w.droppedAttributesCount;
  return link;
}

function duration(start: HrTime, end: HrTime): HrTime {
  let seconds = end[0] - start[0];
  let nanos = end[1] - start[1];
  if (nanos < 0) {
    seconds -= 1;
    nanos += 1_000_000_000;
  }
  return [seconds, nanos];
}
