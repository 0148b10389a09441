/** Lifecycle events: the outbox relay, its Kafka publisher, and decoding of published events. */
export {
  OutboxRelay,
  RelayStoppedError,
  relayOptionsWithDefaults,
  type OutboxRelayOptions,
  type RelayState,
  type RelayStats,
  type ResolvedRelayOptions,
} from "./relay.js";
export { KafkaPublisher, PublishError, type KafkaPublisherOptions } from "./kafka-publisher.js";
export { OutboxStoreError } from "./outbox-store.js";
export { rowTraceContexts, type OutboxTraceColumns } from "../persistence/outbox.js";
export { createOutboxRelay, type EventsOptions } from "./setup.js";
export {
  DiscardPublisher,
  EVENT_CONTENT_TYPE,
  EventHeaders,
  eventMessage,
  protoEventType,
  type EventMessage,
  type EventPublisher,
  type OutboxRecord,
} from "./publisher.js";
export {
  EventDecodeError,
  decodeEventMessage,
  decodeLifecycleEvent,
  headerStrings,
  type ConsumedMessage,
  type DecodedEvent,
} from "./decode.js";
