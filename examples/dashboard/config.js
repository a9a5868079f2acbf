/*
 * Where the dashboard finds the stream and the sign-in pages.  A file of
 * its own so that a deployment can serve another one (or answer this URL
 * from its nginx configuration) without touching the page.  Every field
 * is optional.
 *
 *   stream   the WebSocket URL of the org's stream; null: ws: or wss:
 *            (as the page) on the page's own host, path /v1/ws.  A page
 *            on another host or port than the stream must be listed in
 *            hookstream_allowed_origins, or the stream refuses the cookie
 *            (403).
 *   session  a URL answering 200 when the browser sends a session
 *            cookie and 401 when it does not (the example configuration's
 *            /demo/session; in an application, its own session check).
 *   signIn, signOut   the links shown in the header.
 */

window.hookstreamDashboard = {
    stream: null,
    session: '/demo/session',
    signIn: '/demo/sign-in',
    signOut: '/demo/sign-out'
};
