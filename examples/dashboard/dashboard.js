/*
 * hookstream dashboard: an org's stream (/v1/ws) in the browser, signed
 * in by the session cookie alone (the page never holds a key).  Events,
 * deliveries and issues are listed live in three columns, newest first.
 * Plain browser JavaScript, served as static files; config.js says where
 * the stream and the sign-in pages are.
 *
 * A browser does not tell a page why a WebSocket upgrade was refused: the
 * socket closes without opening, and the status (401, 403, ...) is not
 * exposed.  So when that happens the page asks the session URL of its
 * configuration whether the browser sends a session cookie at all.
 * Without one, the stream has answered 401 (no credential): the page
 * shows "signed out" and stops.  With one, the stream refused it for
 * another reason (a foreign Origin: 403; an unknown or revoked session:
 * 401; too many connections: 429; credentials not checkable: 503): the
 * page shows "refused" and tries again, slowly.  If the session URL does
 * not answer either, the server is away: the page reconnects.
 */

(function () {
    'use strict';

    var MAX_ITEMS = 200;          /* per column; the oldest go */
    var MAX_DATA = 4000;          /* characters of data shown per item */

    var conf = window.hookstreamDashboard || {};

    var $ = function (id) { return document.getElementById(id); };

    /* the column of a message: by its channel, else by its type */
    var BY_CHANNEL = {
        events: 'events',
        deliveries: 'deliveries',
        issues: 'issues'
    };

    var BY_TYPE = {
        event: 'events',
        delivery: 'deliveries',
        issue: 'issues'
    };

    /* what names an item, in order of preference */
    var TITLES = {
        events: ['type', 'event_type', 'name', 'id'],
        deliveries: ['event_type', 'type', 'destination_id', 'destination',
                     'id'],
        issues: ['title', 'type', 'code', 'name', 'id']
    };

    var LABELS = {
        connecting: 'connecting',
        live: 'live',
        reconnecting: 'reconnecting',
        'signed-out': 'signed out',
        refused: 'refused'
    };

    /*
     * The module writes a stream message's envelope in this order and the
     * data after it verbatim, so the data's own text can be shown as it
     * was sent (large integers intact) instead of re-serialised.
     */
    var ENVELOPE = new RegExp('^\\{"type":"[a-z_]+","channel":"[^"\\\\]*",'
                              + '"cursor":"[^"\\\\]*","data":');

    var state = {
        state: 'connecting',
        socket: null,
        cursor: null,      /* the last cursor seen: where a reconnect resumes */
        heartbeat: 30,     /* seconds, from the welcome */
        retries: 0,
        refused: false,    /* refused with a session cookie: retry slowly */
        timer: null,
        watchdog: null,
        seen: {},          /* cursors of the listed items */
        counts: { events: 0, deliveries: 0, issues: 0 },
        other: 0,
        sockets: 0         /* sockets opened, for the curious and for tests */
    };

    window.dashboard = state;


    /* the page */

    function el(tag, cls, text) {
        var e = document.createElement(tag);

        if (cls) {
            e.className = cls;
        }

        if (text !== undefined) {
            e.textContent = text;
        }

        return e;
    }

    function setState(s) {
        var e = $('status');

        state.state = s;
        e.dataset.state = s;
        e.className = 'status ' + s;
        e.textContent = LABELS[s];
    }

    function notice(text, canRetry) {
        $('notice-text').textContent = text || '';
        $('notice').hidden = !text;
        $('retry').hidden = !canRetry;
    }

    function showLinks(signedIn) {
        $('sign-in').hidden = signedIn || !conf.signIn;
        $('sign-out').hidden = !signedIn || !conf.signOut;
    }

    function streamUrl() {
        var proto;

        if (conf.stream) {
            return conf.stream;
        }

        proto = (location.protocol === 'https:') ? 'wss:' : 'ws:';

        return proto + '//' + location.host + '/v1/ws';
    }

    function withCursor(url, cursor) {
        if (!cursor) {
            return url;
        }

        return url + (url.indexOf('?') === -1 ? '?' : '&') + 'cursor='
               + encodeURIComponent(cursor);
    }

    /* the stream's host and port, when they are not the page's */
    function foreignHost() {
        var host;

        try {
            host = new URL(streamUrl(), location.href).host;
        } catch (err) {
            return null;
        }

        return (host === location.host) ? null : host;
    }

    function column(msg) {
        var channel = String(msg.channel || '').split(':')[0];

        return BY_CHANNEL[channel] || BY_TYPE[msg.type] || null;
    }

    function title(col, d) {
        var keys = TITLES[col], v, i;

        for (i = 0; i < keys.length; i++) {
            v = d[keys[i]];

            if ((typeof v === 'string' && v !== '') || typeof v === 'number') {
                return String(v);
            }
        }

        return { events: 'event', deliveries: 'delivery', issues: 'issue' }
               [col];
    }

    function tone(status) {
        if (/^(success|succeeded|delivered|ok|resolved|received|2\d\d)$/i
            .test(status))
        {
            return ' ok';
        }

        if (/fail|error|open|dead|timeout|^[45]\d\d$/i.test(status)) {
            return ' bad';
        }

        return '';
    }

    function when(d) {
        var v = d.received_at || d.created_at || d.updated_at
                || d.attempted_at || d.timestamp,
            t = v ? new Date(v) : new Date();

        return isNaN(t.getTime()) ? new Date() : t;
    }

    /* the channel, and the source or destination the message is about */
    function where(msg, d) {
        var about = d.source_id || d.destination_id || d.destination;

        return (msg.channel || msg.type)
               + (typeof about === 'string' ? ' \u00b7 ' + about : '');
    }

    function rawData(text, msg) {
        var m = ENVELOPE.exec(text);

        if (m && text.charAt(text.length - 1) === '}') {
            return text.slice(m[0].length, -1);
        }

        return JSON.stringify(msg.data === undefined ? null : msg.data);
    }

    function item(col, msg, d, raw) {
        var li, line, t, time;

        li = el('li', 'item');
        li.dataset.cursor = msg.cursor || '';
        li.dataset.channel = msg.channel || '';
        li.dataset.type = msg.type;

        if (d.id !== undefined) {
            li.dataset.id = String(d.id);
        }

        line = el('div', 'line');
        line.appendChild(el('span', 'title', title(col, d)));

        if (typeof d.status === 'string' && d.status !== '') {
            line.appendChild(el('span', 'badge' + tone(d.status), d.status));
        }

        t = when(d);
        time = el('time', 'time', t.toLocaleTimeString());
        time.dateTime = t.toISOString();
        line.appendChild(time);
        li.appendChild(line);

        li.appendChild(el('div', 'channel', where(msg, d)));

        if (raw.length > MAX_DATA) {
            raw = raw.slice(0, MAX_DATA) + '\u2026';
        }

        li.appendChild(el('pre', 'data', raw));

        return li;
    }

    function add(msg, text) {
        var col, d, list, last;

        if (msg.cursor) {
            state.cursor = msg.cursor;

            if (state.seen[msg.cursor]) {
                return;
            }
        }

        col = column(msg);

        if (!col) {
            state.other++;
            $('other').hidden = false;
            $('other').textContent = state.other + ' other message'
                + (state.other === 1 ? '' : 's')
                + ' (syncs, channels without a column)';
            return;
        }

        d = (msg.data && typeof msg.data === 'object') ? msg.data : {};

        list = $(col);
        list.insertBefore(item(col, msg, d, rawData(text, msg)),
                          list.firstChild);

        if (msg.cursor) {
            state.seen[msg.cursor] = true;
        }

        while (list.children.length > MAX_ITEMS) {
            last = list.lastChild;
            delete state.seen[last.dataset.cursor];
            list.removeChild(last);
        }

        state.counts[col]++;
        $(col + '-count').textContent = state.counts[col];
    }


    /* the stream */

    function receive(ws, text) {
        var msg, d;

        try {
            msg = JSON.parse(text);
        } catch (err) {
            return;
        }

        if (!msg || typeof msg !== 'object') {
            return;
        }

        d = (msg.data && typeof msg.data === 'object') ? msg.data : {};

        switch (msg.type) {

        case 'welcome':
            if (d.heartbeat_s > 0) {
                state.heartbeat = d.heartbeat_s;
            }

            /* a resumed stream keeps the cursor it resumed from */
            if (!state.cursor && d.cursor) {
                state.cursor = d.cursor;
            }

            $('org').textContent = d.org_id || '';
            break;

        case 'ping':
            ws.send('{"type":"pong"}');
            break;

        case 'reset':
            /* the buffer no longer reaches back to our cursor */
            if (d.cursor) {
                state.cursor = d.cursor;
            }

            notice('Some messages were missed while the page was away ('
                   + (d.reason || 'reset') + '): the lists may have gaps.',
                   false);
            break;

        case 'event':
        case 'delivery':
        case 'issue':
        case 'sync':
            add(msg, text);
            break;
        }
    }

    /* a connection silent for two heartbeats is taken for dead */
    function watch(ws) {
        clearTimeout(state.watchdog);

        state.watchdog = setTimeout(function () {
            if (state.socket === ws) {
                state.socket = null;
                ws.close();
                retry();
            }
        }, (state.heartbeat * 2 + 10) * 1000);
    }

    function connect() {
        var ws, url, opened = false;

        clearTimeout(state.timer);

        if (state.socket) {
            return;
        }

        if (!state.refused) {
            setState(state.retries ? 'reconnecting' : 'connecting');
        }

        url = withCursor(streamUrl(), state.cursor);

        try {
            ws = new WebSocket(url);
        } catch (err) {
            setState('refused');
            notice('Cannot open the stream at ' + url + ': ' + err.message
                   + ' (see config.js).', false);
            return;
        }

        state.socket = ws;
        state.sockets++;

        ws.onopen = function () {
            if (state.socket !== ws) {
                return;
            }

            opened = true;
            state.retries = 0;
            state.refused = false;
            setState('live');
            showLinks(true);
            notice('');
            watch(ws);
        };

        ws.onmessage = function (e) {
            if (state.socket !== ws) {
                return;
            }

            watch(ws);
            receive(ws, e.data);
        };

        ws.onclose = function () {
            if (state.socket !== ws) {
                return;
            }

            state.socket = null;
            clearTimeout(state.watchdog);

            if (opened) {
                /* a drop, a reload of nginx, a heartbeat missed: resume */
                retry();
                return;
            }

            probe();
        };
    }

    /*
     * Reconnects with the last cursor, backing off (from 250 ms to 10 s
     * after a drop, from 2 s to 60 s after a refusal), spread out so that
     * the dashboards dropped by a restart do not all come back at once.
     */
    function retry() {
        var delay;

        delay = state.refused
                ? Math.min(60000, 2000 * Math.pow(2, state.retries))
                : Math.min(10000, 250 * Math.pow(2, state.retries));
        delay = delay / 2 + Math.random() * delay / 2;

        state.retries++;

        if (!state.refused) {
            setState('reconnecting');
        }

        clearTimeout(state.timer);
        state.timer = setTimeout(connect, delay);

        return delay;
    }

    /* the upgrade was refused: is there a session cookie at all? */
    function probe() {
        if (!conf.session) {
            refused(false);
            return;
        }

        fetch(conf.session, { credentials: 'same-origin', cache: 'no-store' })
            .then(function (res) {
                if (res.status === 401) {
                    signedOut();

                } else {
                    refused(res.ok);
                }

            }, function () {
                /* no answer either: the server is away */
                retry();
            });
    }

    function signedOut() {
        state.refused = false;
        state.retries = 0;
        setState('signed-out');
        showLinks(false);
        notice('Not signed in (401): the stream needs a session, and this '
               + 'browser sends no session cookie. Sign in to watch your '
               + 'org\'s events, deliveries and issues.', false);
    }

    function refused(cookie) {
        var text, host, delay;

        state.refused = true;
        setState('refused');
        showLinks(cookie);

        text = 'The stream refused this browser\'s session. ';
        host = foreignHost();

        if (host) {
            text += 'This page (' + location.origin + ') is not on the '
                    + 'stream\'s host (' + host + '): the stream takes a '
                    + 'session cookie only from an origin listed in '
                    + 'hookstream_allowed_origins, and answers 403 '
                    + 'otherwise. ';

        } else {
            text += 'The session may have expired or been revoked (401): '
                    + 'sign out and sign in again. ';
        }

        delay = retry();
        text += 'Trying again in ' + Math.ceil(delay / 1000) + ' s.';
        notice(text, true);
    }


    /* start */

    $('sign-in').href = conf.signIn || '#';
    $('sign-out').href = conf.signOut || '#';

    $('retry').addEventListener('click', function () {
        state.retries = 0;
        connect();
    });

    /* signed in in another tab, or back online: try at once */
    window.addEventListener('focus', function () {
        if (state.state === 'signed-out' && !state.socket) {
            connect();
        }
    });

    window.addEventListener('online', function () {
        if (state.state === 'reconnecting' && !state.socket) {
            connect();
        }
    });

    connect();
})();
