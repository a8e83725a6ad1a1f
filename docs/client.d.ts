// Types of lifeline's browser client, served by the agent at `GET /client.js`
// (an ES module without dependencies). See docs/status-page.md, "Browser client".
//
//   import { subscribe } from "http://agent:9477/client.js";
//   const stop = subscribe({ checks: ["pbx-ws"] }, (health) => render(health));

/** A check's status, as the agent's API says it. */
export type CheckStatus =
  | "unknown"
  | "connecting"
  | "healthy"
  | "degraded"
  | "unhealthy"
  | "disconnected";

/** An overall status (of the agent, or of the subscribed checks). */
export type OverallStatus = "unknown" | "healthy" | "degraded" | "partial" | "down";

/** One check, as the client reports it. */
export interface CheckHealth {
  status: CheckStatus;
  /** 0–100; `null` while unknown. */
  score: number | null;
  /** Latency of the last success in milliseconds; `null` before one. */
  latency_ms: number | null;
  /** `refused`, `timeout`, `tls`, `auth`, …; `null` when none. */
  error_kind: string | null;
  /** The last error (or result message); empty when none. */
  message: string;
  /** RFC 3339 time of the last status change; `null` before one. */
  since: string | null;
}

/** What the callback receives, on every change. */
export interface Health {
  /**
   * Overall status: of the subscribed checks when `checks` was given (the agent's rules:
   * `partial` when a critical one fails, `down` when all fail), of the agent otherwise.
   */
  status: OverallStatus;
  /** Weight-averaged score (0–100) over the same checks; `null` when none has one. */
  score: number | null;
  /** The subscribed checks (every check when `checks` was not given), by name. */
  checks: Record<string, CheckHealth>;
  /**
   * `false` while the agent cannot be reached (the client keeps retrying); the other
   * fields then hold the last known state.
   */
  connected: boolean;
  /** The agent's own overall status and score. */
  agent: { status: OverallStatus; score: number | null };
}

export interface SubscribeOptions {
  /** Names of the checks to follow; all checks when absent or empty. */
  checks?: string[];
  /** Another agent's base URL (default: the agent that served this module). */
  agent?: string;
  /** First reconnect delay in ms (default 500); doubles per failure. */
  minDelayMs?: number;
  /** Largest reconnect delay in ms (default 30000). Each delay is half fixed, half random. */
  maxDelayMs?: number;
  /**
   * Send cookies / HTTP credentials cross-origin (default false). The agent does not send
   * `Access-Control-Allow-Credentials`, so leave this off unless a proxy in front adds it.
   */
  withCredentials?: boolean;
}

/** Stops the subscription: closes the event stream, cancels retries, no more callbacks. */
export type Stop = () => void;

/**
 * Follows the agent's events (Server-Sent Events at `/api/v1/events`), resynchronises
 * from `/health/detailed` after every (re)connect and calls `callback` whenever the
 * reported health changes.
 */
export function subscribe(options: SubscribeOptions, callback: (health: Health) => void): Stop;
export function subscribe(callback: (health: Health) => void): Stop;
