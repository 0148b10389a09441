/** @nexusflow/gateway: the public entry point, forwarding the API services to the scheduler. */
export {
  type Gateway,
  type GatewayAddress,
  GatewayListenError,
  type GatewayOptions,
  type GatewayState,
  createGateway,
} from "./server.js";
export { type ForwardingOptions, createForwardingService, passThroughError } from "./proxy.js";
export { endToEndHeaders, isHopHeader } from "./http/headers.js";
export { PROXIED_SERVICES, createRoutes } from "./routes.js";
export { type GuardOptions, StreamLimiter, authConnectError, guardInterceptor, kPrincipal } from "./guard.js";
export { REFLECTION_SERVICES, addReflection } from "./reflection.js";
export { type RestHandler, type RestHandlerOptions, createRestHandler } from "./rest/handler.js";
export { type RestRoute, RestRouteError, type RouteMatch, compileRoutes, matchRoute } from "./rest/routes.js";
export { httpStatusOf, statusJson } from "./rest/status.js";
