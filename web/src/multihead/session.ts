// The WebSocket side of a multi-head session (/ws/multihead/{id}): typed messages in and out. The browser's
// session cookie authenticates the handshake (same origin). A dropped connection is retried with a growing
// delay; a refusal (close codes 4xxx) or the end of the session is final.

export interface Viewport {
  slide_id: string;
  center: [number, number];
  zoom: number;
}

export interface SessionState {
  session_id: string;
  presenter: string;
  slides: string[];
  invitees: string[];
  control: string;
  participants: string[];
  viewport: Viewport | null;
  pointer: { x: number; y: number; slide_id?: string } | null;
  join_url: string;
  you: string;
}

export type Incoming =
  | ({ type: "state" } & SessionState)
  | ({ type: "viewport"; from: string } & Viewport)
  | { type: "pointer"; x: number; y: number; slide_id?: string; from: string }
  | { type: "control"; user: string; by: string }
  | { type: "joined" | "left"; user: string; participants: string[] }
  | { type: "invited"; users: string[]; invitees: string[] }
  | { type: "ended"; reason: string }
  | { type: "error"; reason: string; fatal?: boolean; refused?: string };

export type Outgoing =
  | ({ type: "viewport" } & Viewport)
  | { type: "pointer"; x: number; y: number; slide_id?: string }
  | { type: "handover"; to: string };

export class MultiheadConnection {
  private socket: WebSocket | null = null;
  private retries = 0;
  private finished = false;

  constructor(
    private readonly sessionId: string,
    private readonly onMessage: (message: Incoming) => void,
    private readonly onClosed: (reason: string, final: boolean) => void,
  ) {
    this.connect();
  }

  /** Send a message if the socket is open (moves made while reconnecting are dropped: the next one counts). */
  send(message: Outgoing): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  get open(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  close(): void {
    this.finished = true;
    this.socket?.close(1000);
  }

  private connect(): void {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws/multihead/${encodeURIComponent(this.sessionId)}`);
    this.socket = socket;
    socket.addEventListener("open", () => (this.retries = 0));
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(String(event.data)) as Incoming;
      if (message.type === "ended") this.finished = true;
      this.onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      // 4xxx: refused (not authenticated, not invited, no access to a slide, no such session): final.
      const final = this.finished || (event.code >= 4000 && event.code < 5000);
      this.onClosed(event.reason || `connection closed (${event.code})`, final);
      if (!final) {
        this.retries += 1;
        setTimeout(() => this.connect(), Math.min(10_000, 500 * 2 ** this.retries));
      }
    });
  }
}
