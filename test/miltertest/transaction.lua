-- transaction.lua - miltertest drives sluice through negotiation and a full
-- transaction, checking each reply. The socket comes from $SLUICE_MILTER
-- ("inet:PORT@127.0.0.1"). The daemon under test runs the scripted test
-- engine: the recipient's local part picks the verdict.
local sock = os.getenv("SLUICE_MILTER")
mt.set_timeout(10)
local conn = mt.connect(sock, 20, 0.1)
if conn == nil then error("cannot connect to " .. tostring(sock)) end

local function expect(what, want)
  local got = mt.getreply(conn)
  if got ~= want then
    error(string.format("%s: reply %q, wanted %q", what, string.char(got), string.char(want)))
  end
  mt.echo("ok - " .. what)
end

if mt.negotiate(conn, 6, nil, nil) ~= nil then error("negotiate failed") end
if not mt.test_action(conn, SMFIF_ADDHDRS) then error("ADDHDRS not requested (milter.header is set)") end
if mt.test_action(conn, SMFIF_CHGBODY) then error("CHGBODY requested but never used") end
if mt.test_option(conn, SMFIP_NR_RCPT) then error("NR_RCPT requested: sluice could not decide at RCPT") end
if not mt.test_option(conn, SMFIP_NOUNKNOWN) then error("NOUNKNOWN not requested") end
-- sluice decides nothing on header lines: it asks for none (miltertest then
-- refuses to send them), but keeps end-of-headers and the body size.
if not mt.test_option(conn, SMFIP_NOHDRS) then error("NOHDRS not requested") end
if mt.test_option(conn, SMFIP_NOEOH) then error("NOEOH requested: sluice decides at end of headers") end
mt.echo("ok - negotiation")

mt.macro(conn, SMFIC_CONNECT, "j", "mx.rig.test", "{daemon_name}", "mx.rig.test")
if mt.conninfo(conn, "client.example", "192.0.2.44") ~= nil then error("conninfo failed") end
expect("connect", SMFIR_CONTINUE)
if mt.helo(conn, "client.example") ~= nil then error("helo failed") end
expect("helo", SMFIR_CONTINUE)

mt.macro(conn, SMFIC_MAIL, "i", "MT0001")
if mt.mailfrom(conn, "<sender@client.example>", "SIZE=512") ~= nil then error("mailfrom failed") end
expect("mail", SMFIR_CONTINUE)
if mt.rcptto(conn, "<reject@rig.test>") ~= nil then error("rcptto failed") end
expect("rcpt reject@ gets a reply code", SMFIR_REPLYCODE)
if mt.rcptto(conn, "<defer@rig.test>") ~= nil then error("rcptto failed") end
expect("rcpt defer@ gets a reply code", SMFIR_REPLYCODE)
if mt.rcptto(conn, "<alice@rig.test>") ~= nil then error("rcptto failed") end
expect("rcpt alice@", SMFIR_CONTINUE)
if mt.data(conn) ~= nil then error("data failed") end
expect("data", SMFIR_CONTINUE)
if mt.eoh(conn) ~= nil then error("eoh failed") end
expect("eoh", SMFIR_CONTINUE)
if mt.bodystring(conn, "Hello from miltertest\r\n") ~= nil then error("body failed") end
if mt.eom(conn) ~= nil then error("eom failed") end
expect("eom", SMFIR_CONTINUE)
if not mt.eom_check(conn, MT_HDRADD, "X-Sluice") then error("no X-Sluice header added") end
mt.echo("ok - X-Sluice header added at end of message")

-- A second message on the same connection, held at end of message: PROGRESS
-- is allowed there, miltertest records it and waits for the final reply.
if mt.abort(conn) ~= nil then error("abort failed") end
if mt.mailfrom(conn, "<sender@client.example>") ~= nil then error("mailfrom failed") end
expect("second mail", SMFIR_CONTINUE)
if mt.rcptto(conn, "<hold-1200.eom@rig.test>") ~= nil then error("rcptto failed") end
expect("second rcpt", SMFIR_CONTINUE)
local t0 = os.time()
if mt.eom(conn) ~= nil then error("eom failed") end
expect("held eom", SMFIR_CONTINUE)
mt.echo("ok - held end of message answered")

-- A third message rejected at end of message.
if mt.abort(conn) ~= nil then error("abort failed") end
if mt.mailfrom(conn, "<sender@client.example>") ~= nil then error("mailfrom failed") end
expect("third mail", SMFIR_CONTINUE)
if mt.rcptto(conn, "<reject.eom@rig.test>") ~= nil then error("rcptto failed") end
expect("third rcpt", SMFIR_CONTINUE)
if mt.eom(conn) ~= nil then error("eom failed") end
expect("rejected eom", SMFIR_REPLYCODE)

mt.disconnect(conn)
mt.echo("ok - done")
