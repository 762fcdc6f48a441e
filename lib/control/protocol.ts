// protocol.ts - the control socket's wire format, shared by sluiced and sluicectl.
//
// One JSON object per line each way, strictly request then response:
//   request   {"v":1,"cmd":"show","args":{"target":"192.0.2.7"}}
//   response  {"v":1,"ok":true,"data":{...}}
//             {"v":1,"ok":false,"error":{"code":"not_found","message":"..."}}
// Error codes: bad_request (the request or an argument is wrong),
// not_found, unknown_command, failed (the command itself failed),
// version (another protocol version), unknown_message (learn: a queue id
// sluice did not see delivered). Who may talk: whoever may open the
// socket; its mode (control.socket_mode, default 0660) and group decide.

export const CONTROL_VERSION = 1;
export const MAX_LINE = 64 * 1024;

export interface Request {
  readonly v: number;
  readonly cmd: string;
  readonly args?: Record<string, unknown>;
}

export type ErrorCode = 'bad_request' | 'not_found' | 'unknown_command' | 'failed' | 'version' | 'unknown_message';

export type Response =
  | { readonly v: number; readonly ok: true; readonly data: unknown }
  | { readonly v: number; readonly ok: false; readonly error: { readonly code: ErrorCode; readonly message: string } };

export class CommandError extends Error {
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}
