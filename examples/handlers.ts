/**
 * User task handlers for the examples, loaded by an executor with
 * `EXECUTOR_HANDLERS=examples/handlers.ts` (the dev stack does this for executor-2).
 *
 * A handler module default-exports a function that registers handlers on the executor's registry.
 * A handler gets the step's rendered input and a context (`ctx.log`, `ctx.signal`, `ctx.heartbeat`,
 * run/step ids) and returns the step's output as JSON; throwing a `TaskError` chooses the error type
 * and whether a retry may help.
 */
import { type HandlerRegistry, type TaskContext, TaskError } from "@nexusflow/executor";

/** One order line as the order-pipeline passes it. */
interface OrderItem {
  sku: string;
  qty: number;
  unitPrice: number;
}

/** Input of `price-quote`. */
interface QuoteInput {
  orderId: string;
  /** ISO 3166 alpha-2, upper case. */
  country: string;
  items: OrderItem[];
  express: boolean;
}

/** Output of `price-quote`: money amounts in the currency's major unit, rounded to cents. */
interface Quote {
  orderId: string;
  currency: string;
  subtotal: number;
  vatRate: number;
  tax: number;
  shipping: number;
  total: number;
}

/** VAT by destination country; others pay the default rate. */
const VAT: Readonly<Record<string, number>> = { NL: 0.21, BE: 0.21, DE: 0.19, FR: 0.2, US: 0 };
const DEFAULT_VAT = 0.2;
const FREE_SHIPPING_FROM = 50;

const cents = (amount: number): number => Math.round(amount * 100) / 100;

function parseQuoteInput(input: unknown): QuoteInput {
  const record = (typeof input === "object" && input !== null ? input : {}) as Partial<QuoteInput>;
  if (typeof record.orderId !== "string")
    throw TaskError.terminal("INVALID_INPUT", "orderId: expected a string");
  if (typeof record.country !== "string")
    throw TaskError.terminal("INVALID_INPUT", "country: expected a string");
  if (!Array.isArray(record.items) || record.items.length === 0) {
    throw TaskError.terminal("INVALID_INPUT", "items: expected a non-empty array");
  }
  record.items.forEach((item, i) => {
    if (typeof item?.qty !== "number" || typeof item.unitPrice !== "number") {
      throw TaskError.terminal("INVALID_INPUT", `items[${i}]: expected numeric qty and unitPrice`);
    }
  });
  return {
    orderId: record.orderId,
    country: record.country,
    items: record.items,
    express: record.express === true,
  };
}

/** Prices an order: subtotal, VAT of the destination country, shipping and total. Pure computation. */
export function priceQuote(input: unknown, ctx: TaskContext): Quote {
  const order = parseQuoteInput(input);
  const subtotal = cents(order.items.reduce((sum, item) => sum + item.qty * item.unitPrice, 0));
  const vatRate = VAT[order.country] ?? DEFAULT_VAT;
  const tax = cents(subtotal * vatRate);
  const shipping = order.express ? 14.95 : subtotal >= FREE_SHIPPING_FROM ? 0 : 4.95;
  const quote: Quote = {
    orderId: order.orderId,
    currency: order.country === "US" ? "USD" : "EUR",
    subtotal,
    vatRate,
    tax,
    shipping,
    total: cents(subtotal + tax + shipping),
  };
  ctx.log.info("quoted order", {
    orderId: order.orderId,
    lines: order.items.length,
    total: quote.total,
    currency: quote.currency,
  });
  return quote;
}

/** Registers the example handlers. */
export default function register(registry: HandlerRegistry): void {
  registry.register("price-quote", (input: unknown, ctx: TaskContext) => priceQuote(input, ctx));
  registerTripHandlers(registry);
}

/** Bookings of the trip-booking saga; kept in memory so cancellations can be checked. */
const bookings = new Map<string, { kind: string; who: string; where: string }>();
let nextBooking = 1;

/** Input of the `book-*` handlers. */
interface BookInput {
  traveller?: string;
  guest?: string;
  to?: string;
  city?: string;
}

function book(kind: "FL" | "HT") {
  return (input: BookInput, ctx: TaskContext): { booking: string } => {
    const who = input.traveller ?? input.guest ?? "";
    const where = input.to ?? input.city ?? "";
    if (who === "" || where === "")
      throw TaskError.terminal("INVALID_INPUT", "traveller and destination are required");
    const booking = `${kind}-${String(nextBooking++).padStart(4, "0")}`;
    bookings.set(booking, { kind, who, where });
    ctx.log.info(`booked ${booking}`, { who, where });
    return { booking };
  };
}

function cancel(kind: "FL" | "HT") {
  return (input: { booking?: string }, ctx: TaskContext): { cancelled: string } => {
    const booking = input.booking ?? "";
    if (!booking.startsWith(`${kind}-`))
      throw TaskError.terminal("INVALID_INPUT", `not a ${kind} booking: ${booking}`);
    // Idempotent: cancelling twice (a retried compensation) is fine.
    bookings.delete(booking);
    ctx.log.info(`cancelled ${booking}`);
    return { cancelled: booking };
  };
}

/** Cards that the example payment provider declines. */
const DECLINED = /^4000-?0000-?0000-?0002$/;

/** Registers the trip-booking saga's handlers. */
export function registerTripHandlers(registry: HandlerRegistry): void {
  registry.register("book-flight", book("FL"));
  registry.register("book-hotel", book("HT"));
  registry.register("cancel-flight", cancel("FL"));
  registry.register("cancel-hotel", cancel("HT"));
  registry.register(
    "charge-card",
    (input: { card?: string; amount?: number; reference?: string }, ctx: TaskContext) => {
      if (DECLINED.test(input.card ?? "")) throw TaskError.terminal("CARD_DECLINED", "the card was declined");
      ctx.log.info("charged", { amount: input.amount, reference: input.reference });
      return { payment: `pay_${input.reference ?? "?"}` };
    },
  );
}
