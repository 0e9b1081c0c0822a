// Package smtp is the SMTP proxy front end. It accepts SMTP sessions with
// emersion/go-smtp, turns each message into a node admission (authorize,
// route, limit, pick) and relays it to an upstream with go-smtp's client.
//
// The relay works message by message:
//
//   - AUTH PLAIN or LOGIN asks the authorization server (protocol SMTP,
//     method AUTH). With an authorization server, MAIL without AUTH is
//     refused with 530 5.7.0; without one the node is open and the caller's
//     token is its IP address.
//   - MAIL FROM checks the rate limits (protocol SMTP, method MAIL, length
//     from the SIZE parameter, 0 without it), picks an upstream (not down,
//     not draining), connects to it (STARTTLS when it offers it; a failed
//     connection tries another upstream) and relays MAIL. The pick is held,
//     and counted in flight for drains, until the message ends: its final
//     reply, RSET, the next MAIL or the end of the session.
//   - RCPT is relayed and the upstream's reply passed on as it is.
//   - DATA is streamed to the upstream through a fixed buffer. When the
//     message turns out larger than the SIZE declared at MAIL, the limits
//     are checked again with the real size before the final dot is sent;
//     such a message counts a second hit against the limits that match
//     both sizes. A message that cannot be completed (the client stalls,
//     disconnects, exceeds the size limit, hits a limit, or the upstream
//     fails) is aborted by closing the upstream connection without the
//     final dot, so the upstream never receives a partial message.
//
// Upstream connections are kept for reuse between messages (per address,
// a few idle ones for a short while), so a busy session does not pay a
// connection and a TLS handshake per message.
//
// Every SMTP reply the proxy makes itself is chosen in one place, reply in
// errors.go; upstream replies are passed through unchanged.
package smtp
