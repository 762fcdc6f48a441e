-- negotiate-v2.lua - an old MTA offering protocol version 2 and the
-- version-1 actions: sluice answers within what was offered.
local sock = os.getenv("SLUICE_MILTER")
mt.set_timeout(10)
local conn = mt.connect(sock, 20, 0.1)
if conn == nil then error("cannot connect to " .. tostring(sock)) end
if mt.negotiate(conn, 2, 0x0f, 0x7f) ~= nil then error("negotiate v2 failed") end
if mt.test_option(conn, SMFIP_NR_HELO) then error("asked for a flag version 2 lacks") end
if mt.conninfo(conn, "client.example", "2001:db8::7") ~= nil then error("conninfo failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("connect over IPv6: no CONTINUE") end
if mt.helo(conn, "client.example") ~= nil then error("helo failed") end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error("helo: no CONTINUE") end
mt.disconnect(conn)
mt.echo("ok - version 2 negotiation")
