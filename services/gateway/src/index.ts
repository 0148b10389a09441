/** @nexusflow/gateway: the public entry point, forwarding the API services to the scheduler. */
export {
  type Gateway,
  type GatewayAddress,
  GatewayListenError,
  type GatewayOptions,
  type GatewayState,
  createGateway,
} from "./server.js";
export {
  type ForwardingOptions,
  createForwardingService,
  endToEndHeaders,
  isHopHeader,
  passThroughError,
} from "./proxy.js";
export { PROXIED_SERVICES, createRoutes } from "./routes.js";
