// constants.ts - milter protocol constants under their libmilter names.
//
// Values from libmilter's mfdef.h / mfapi.h (Sendmail 8.14-8.18): commands,
// replies, actions and protocol flags. One note each.

// Commands, MTA -> milter (one byte each).
export const SMFIC_ABORT = 0x41; // 'A' end the current message; no reply
export const SMFIC_BODY = 0x42; // 'B' a body chunk, raw bytes
export const SMFIC_CONNECT = 0x43; // 'C' hostname, family, port, address
export const SMFIC_MACRO = 0x44; // 'D' stage byte, then name/value pairs; no reply
export const SMFIC_BODYEOB = 0x45; // 'E' end of body; modifications, then one final reply
export const SMFIC_HELO = 0x48; // 'H' the HELO/EHLO argument
export const SMFIC_QUIT_NC = 0x4b; // 'K' quit, keep the connection for a new CONNECT (v6)
export const SMFIC_HEADER = 0x4c; // 'L' header name and value
export const SMFIC_MAIL = 0x4d; // 'M' sender and ESMTP parameters
export const SMFIC_EOH = 0x4e; // 'N' end of headers
export const SMFIC_OPTNEG = 0x4f; // 'O' version, actions, protocol flags
export const SMFIC_QUIT = 0x51; // 'Q' the MTA closes; no reply
export const SMFIC_RCPT = 0x52; // 'R' recipient and ESMTP parameters
export const SMFIC_DATA = 0x54; // 'T' the DATA command (v4)
export const SMFIC_UNKNOWN = 0x55; // 'U' an SMTP command the MTA did not recognise (v3)

// Replies, milter -> MTA.
export const SMFIR_ADDRCPT = 0x2b; // '+' add a recipient (EOB only)
export const SMFIR_DELRCPT = 0x2d; // '-' remove a recipient (EOB only)
export const SMFIR_ACCEPT = 0x61; // 'a' accept; no more events for this message (or connection)
export const SMFIR_REPLBODY = 0x62; // 'b' replace the body (EOB only)
export const SMFIR_CONTINUE = 0x63; // 'c' go on
export const SMFIR_DISCARD = 0x64; // 'd' accept and silently discard the message
export const SMFIR_ADDHEADER = 0x68; // 'h' add a header (EOB only, SMFIF_ADDHDRS)
export const SMFIR_INSHEADER = 0x69; // 'i' insert a header at an index (EOB only, SMFIF_ADDHDRS)
export const SMFIR_CHGHEADER = 0x6d; // 'm' change or delete a header (EOB only)
export const SMFIR_PROGRESS = 0x70; // 'p' still working: restarts the MTA's read timer
export const SMFIR_QUARANTINE = 0x71; // 'q' put the message on hold (SMFIF_QUARANTINE)
export const SMFIR_REJECT = 0x72; // 'r' reject with the MTA's default 5xx text
export const SMFIR_SKIP = 0x73; // 's' skip further body chunks
export const SMFIR_TEMPFAIL = 0x74; // 't' tempfail with the MTA's default 4xx text
export const SMFIR_REPLYCODE = 0x79; // 'y' reply with our own code and text

// Action flags (OPTNEG field 2): what the milter may do at end of message.
export const SMFIF_ADDHDRS = 0x001; // add headers
export const SMFIF_CHGBODY = 0x002; // replace the body
export const SMFIF_ADDRCPT = 0x004; // add recipients
export const SMFIF_DELRCPT = 0x008; // remove recipients
export const SMFIF_CHGHDRS = 0x010; // change or delete headers
export const SMFIF_QUARANTINE = 0x020; // quarantine the message
export const SMFIF_CHGFROM = 0x040; // change the sender (v6)
export const SMFIF_ADDRCPT_PAR = 0x080; // add recipients with ESMTP args (v6)
export const SMFIF_SETSYMLIST = 0x100; // the OPTNEG reply carries macro lists (v6)

// Protocol flags (OPTNEG field 3).
export const SMFIP_NOCONNECT = 0x000001; // do not send CONNECT
export const SMFIP_NOHELO = 0x000002; // do not send HELO
export const SMFIP_NOMAIL = 0x000004; // do not send MAIL
export const SMFIP_NORCPT = 0x000008; // do not send RCPT
export const SMFIP_NOBODY = 0x000010; // do not send body chunks
export const SMFIP_NOHDRS = 0x000020; // do not send headers
export const SMFIP_NOEOH = 0x000040; // do not send EOH
export const SMFIP_NR_HDR = 0x000080; // no reply to headers
export const SMFIP_NOUNKNOWN = 0x000100; // do not send unknown commands
export const SMFIP_NODATA = 0x000200; // do not send DATA
export const SMFIP_SKIP = 0x000400; // the MTA understands SMFIR_SKIP
export const SMFIP_RCPT_REJ = 0x000800; // also send recipients the MTA rejected
export const SMFIP_NR_CONN = 0x001000; // no reply to CONNECT
export const SMFIP_NR_HELO = 0x002000; // no reply to HELO
export const SMFIP_NR_MAIL = 0x004000; // no reply to MAIL
export const SMFIP_NR_RCPT = 0x008000; // no reply to RCPT
export const SMFIP_NR_DATA = 0x010000; // no reply to DATA
export const SMFIP_NR_UNKN = 0x020000; // no reply to UNKNOWN
export const SMFIP_NR_EOH = 0x040000; // no reply to EOH
export const SMFIP_NR_BODY = 0x080000; // no reply to body chunks
export const SMFIP_HDR_LEADSPC = 0x100000; // header values keep their leading space

// Macro list stages in the OPTNEG reply (note: EOM before EOH, as libmilter has it).
export const SMFIM_CONNECT = 0; // macros for CONNECT
export const SMFIM_HELO = 1; // for HELO
export const SMFIM_ENVFROM = 2; // for MAIL
export const SMFIM_ENVRCPT = 3; // for RCPT
export const SMFIM_DATA = 4; // for DATA
export const SMFIM_EOM = 5; // for end of message
export const SMFIM_EOH = 6; // for end of headers

/** Highest protocol version sluice speaks; the lowest it accepts. */
export const SMFI_PROT_VERSION = 6;
export const SMFI_PROT_VERSION_MIN = 2;

/** Body chunks and our own frames never exceed this (libmilter MILTER_CHUNK_SIZE). */
export const MILTER_CHUNK_SIZE = 65535;

/** Command letter for logs: 0x52 -> "R". */
export function letter(cmd: number): string {
  return cmd >= 0x20 && cmd < 0x7f ? String.fromCharCode(cmd) : `0x${cmd.toString(16).padStart(2, '0')}`;
}
