/*
 * hookstream inspector: creates a test session, shows its URL and lists
 * the requests sent to it as they arrive over the session's test stream.
 * Plain browser JavaScript, served as static files by the same nginx.
 *
 * Bodies are shown exactly as they arrived: the page re-indents the raw
 * JSON text instead of parsing and re-serialising it, so large integers
 * and key order are kept.
 */

(function () {
    'use strict';

    var $ = function (id) { return document.getElementById(id); };

    var state = {
        session: null,     /* the session as the API returned it */
        cursor: null,      /* the last cursor seen: where a reconnect resumes */
        socket: null,
        retries: 0,
        timer: null,
        ended: false,
        seen: {},          /* event ids already listed */
        count: 0
    };

    /* for the curious, and for tests */
    window.inspector = state;


    /* raw JSON text helpers: they walk text a real parser accepted */

    function skipSpace(t, i) {
        while (i < t.length && ' \t\r\n'.indexOf(t[i]) !== -1) {
            i++;
        }
        return i;
    }

    /* the end of the JSON value that starts at i */
    function skipValue(t, i) {
        var c, depth;

        i = skipSpace(t, i);
        c = t[i];

        if (c === '"') {
            for (i++; i < t.length && t[i] !== '"'; i++) {
                if (t[i] === '\\') {
                    i++;
                }
            }
            return i + 1;
        }

        if (c === '{' || c === '[') {
            depth = 0;

            for (; i < t.length; i++) {
                c = t[i];

                if (c === '"') {
                    i = skipValue(t, i) - 1;
                } else if (c === '{' || c === '[') {
                    depth++;
                } else if (c === '}' || c === ']') {
                    if (--depth === 0) {
                        return i + 1;
                    }
                }
            }
            return i;
        }

        while (i < t.length && ',}] \t\r\n'.indexOf(t[i]) === -1) {
            i++;
        }
        return i;
    }

    /* the text of an object's member, or null */
    function member(t, name) {
        var i, ks, key, vs;

        i = skipSpace(t, 0);

        if (t[i] !== '{') {
            return null;
        }

        for (i++; ; ) {
            i = skipSpace(t, i);

            if (i >= t.length || t[i] === '}') {
                return null;
            }

            ks = i;
            i = skipValue(t, i);
            key = JSON.parse(t.slice(ks, i));
            i = skipSpace(t, i) + 1;            /* the colon */
            vs = skipSpace(t, i);
            i = skipValue(t, vs);

            if (key === name) {
                return t.slice(vs, i);
            }

            i = skipSpace(t, i);

            if (t[i] === ',') {
                i++;
            }
        }
    }

    /* the texts of an array's elements */
    function elements(t) {
        var out = [], i, s;

        i = skipSpace(t, 0);

        if (t[i] !== '[') {
            return out;
        }

        for (i++; ; ) {
            i = skipSpace(t, i);

            if (i >= t.length || t[i] === ']') {
                return out;
            }

            s = i;
            i = skipValue(t, i);
            out.push(t.slice(s, i));
            i = skipSpace(t, i);

            if (t[i] === ',') {
                i++;
            }
        }
    }

    /* indents JSON text without touching its tokens */
    function pretty(raw) {
        var out = '', depth = 0, i = 0, c, j, close;

        function nl() {
            return '\n' + new Array(depth + 1).join('  ');
        }

        while (i < raw.length) {
            c = raw[i];

            if (c === '"') {
                j = skipValue(raw, i);
                out += raw.slice(i, j);
                i = j;
                continue;
            }

            if (' \t\r\n'.indexOf(c) !== -1) {
                i++;
                continue;
            }

            if (c === '{' || c === '[') {
                close = (c === '{') ? '}' : ']';
                j = skipSpace(raw, i + 1);

                if (raw[j] === close) {
                    out += c + close;
                    i = j + 1;
                    continue;
                }

                depth++;
                out += c + nl();
                i++;
                continue;
            }

            if (c === '}' || c === ']') {
                depth--;
                out += nl() + c;
            } else if (c === ',') {
                out += ',' + nl();
            } else if (c === ':') {
                out += ': ';
            } else {
                out += c;
            }

            i++;
        }

        return out;
    }


    /* the page */

    function setStatus(text) {
        var el = $('status');

        el.textContent = text;
        el.className = 'status ' + text;
    }

    function showError(text) {
        var el = $('error');

        el.textContent = text || '';
        el.hidden = !text;
    }

    function showSession(s) {
        var expires = new Date(s.expires_at);

        state.session = s;

        $('intro').hidden = true;
        $('session').hidden = false;
        $('url').value = s.url;
        $('limit').textContent = 'limit ' + s.request_limit;
        $('expires').textContent = 'expires ' + expires.toLocaleString();
        $('example').textContent =
            "curl -X POST -H 'Content-Type: application/json' \\\n" +
            "     -d '{\"hello\":\"world\"}' " + s.url;

        if (window.history && history.replaceState) {
            history.replaceState(null, '', '?session=' + s.session_id);
        }
    }

    function cell(row, text) {
        var td = document.createElement('td');

        td.textContent = text;
        row.appendChild(td);
    }

    function bodyText(raw) {
        if (raw === null || raw === 'null') {
            return '(no body)';
        }

        if (raw[0] === '"') {
            return JSON.parse(raw);
        }

        return pretty(raw);
    }

    /* one request: "raw" is the text of the event's data */
    function addRequest(raw) {
        var data, li, line, el, details, summary, table, tr, name, pre;

        data = JSON.parse(raw);

        if (state.seen[data.id]) {
            return;
        }

        state.seen[data.id] = true;
        state.count++;
        $('count').textContent = state.count +
                                 (state.count === 1 ? ' request' : ' requests');

        li = document.createElement('li');
        li.className = 'request';
        li.dataset.id = data.id;
        li.dataset.method = data.method;

        line = document.createElement('div');
        line.className = 'line';

        el = document.createElement('span');
        el.className = 'method';
        el.textContent = data.method;
        line.appendChild(el);

        el = document.createElement('span');
        el.className = 'path';
        el.textContent = data.path + (data.query ? '?' + data.query : '');
        line.appendChild(el);

        el = document.createElement('span');
        el.className = 'ip';
        el.textContent = data.source_ip || '';
        line.appendChild(el);

        el = document.createElement('time');
        el.className = 'time';
        el.dateTime = data.received_at;
        el.textContent = new Date(data.received_at).toLocaleTimeString();
        line.appendChild(el);

        li.appendChild(line);

        details = document.createElement('details');
        summary = document.createElement('summary');
        summary.textContent = 'Headers';
        details.appendChild(summary);

        table = document.createElement('table');

        for (name in data.headers || {}) {
            if (Object.prototype.hasOwnProperty.call(data.headers, name)) {
                tr = document.createElement('tr');
                cell(tr, name);
                cell(tr, data.headers[name]);
                table.appendChild(tr);
            }
        }

        details.appendChild(table);
        li.appendChild(details);

        pre = document.createElement('pre');
        pre.className = 'body';
        pre.textContent = bodyText(member(raw, 'body'));
        li.appendChild(pre);

        /* newest first */
        $('requests').insertBefore(li, $('requests').firstChild);
    }


    /* the API */

    function sessionsUrl(id) {
        return '/v1/test/sessions' + (id ? '/' + encodeURIComponent(id) : '');
    }

    function create() {
        showError('');
        $('create').disabled = true;

        fetch(sessionsUrl(), { method: 'POST' })
            .then(function (res) {
                return res.json().then(function (j) {
                    if (res.status !== 201) {
                        var wait = res.headers.get('Retry-After');
                        throw new Error((j && j.error || res.statusText) +
                                        (wait ? ' (retry in ' + wait + ' s)'
                                              : ''));
                    }
                    return j;
                });
            })
            .then(function (s) {
                stop();
                reset();
                showSession(s);
                state.cursor = null;
                connect();
            })
            .catch(function (err) {
                showError('Could not create a session: ' + err.message);
            })
            .then(function () {
                $('create').disabled = false;
            });
    }

    /* a session by id: its buffered requests, then live from its cursor */
    function load(id) {
        return fetch(sessionsUrl(id))
            .then(function (res) {
                if (res.status === 404) {
                    return null;
                }
                if (!res.ok) {
                    throw new Error(res.statusText);
                }
                return res.text();
            })
            .then(function (text) {
                if (text === null) {
                    return false;
                }

                showSession(JSON.parse(text));
                elements(member(text, 'events') || '[]').forEach(addRequest);
                state.cursor = JSON.parse(member(text, 'cursor'));
                return true;
            });
    }

    function reset() {
        state.seen = {};
        state.count = 0;
        state.ended = false;
        $('requests').textContent = '';
        $('count').textContent = '0 requests';
    }

    function stop() {
        var ws = state.socket;

        clearTimeout(state.timer);
        state.socket = null;

        if (ws) {
            ws.close();
        }
    }

    function ended() {
        state.ended = true;
        stop();
        setStatus('ended');
        showError('The session has ended or expired: create a new one.');
    }

    function connect() {
        var proto, url, ws, opened = false;

        proto = (location.protocol === 'https:') ? 'wss:' : 'ws:';
        url = proto + '//' + location.host + '/v1/ws/test/' +
              encodeURIComponent(state.session.session_id);

        if (state.cursor) {
            url += '?cursor=' + encodeURIComponent(state.cursor);
        }

        setStatus(state.retries ? 'reconnecting' : 'connecting');

        ws = new WebSocket(url);
        state.socket = ws;

        ws.onopen = function () {
            opened = true;
            state.retries = 0;
            setStatus('live');
        };

        ws.onmessage = function (e) {
            var msg;

            try {
                msg = JSON.parse(e.data);
            } catch (err) {
                return;
            }

            if (msg.type === 'event') {
                if (msg.cursor) {
                    state.cursor = msg.cursor;
                }
                addRequest(member(e.data, 'data'));

            } else if (msg.type === 'ping') {
                ws.send('{"type":"pong"}');

            } else if (msg.type === 'reset') {
                /* the buffer no longer reaches back: fetch what it has */
                if (msg.data && msg.data.cursor) {
                    state.cursor = msg.data.cursor;
                }
                load(state.session.session_id).catch(function () {});
            }
        };

        ws.onclose = function (e) {
            if (state.socket !== ws) {
                return;
            }

            state.socket = null;

            if (e.code === 1000 && e.reason === 'session ended') {
                ended();
                return;
            }

            if (!opened) {
                /* a refused upgrade: is the session still there? */
                fetch(sessionsUrl(state.session.session_id), {
                    method: 'HEAD'
                }).then(function (res) {
                    if (res.status === 404) {
                        ended();
                    } else {
                        retry();
                    }
                }, retry);
                return;
            }

            retry();
        };
    }

    /* reconnects with the last cursor, backing off up to 10 s */
    function retry() {
        var delay;

        if (state.ended) {
            return;
        }

        delay = Math.min(10000, 250 * Math.pow(2, state.retries));
        state.retries++;
        setStatus('reconnecting');
        clearTimeout(state.timer);
        state.timer = setTimeout(connect, delay);
    }

    function copy() {
        var input = $('url'), button = $('copy');

        function done() {
            button.textContent = 'Copied';
            setTimeout(function () { button.textContent = 'Copy'; }, 1500);
        }

        function fallback() {
            input.select();
            try {
                document.execCommand('copy');
                done();
            } catch (err) {
                showError('Copy the URL by hand: ' + input.value);
            }
        }

        if (navigator.clipboard && navigator.clipboard.writeText) {
            navigator.clipboard.writeText(input.value).then(done, fallback);
        } else {
            fallback();
        }
    }

    $('create').addEventListener('click', create);
    $('copy').addEventListener('click', copy);

    /* ?session=<id> reopens a session, e.g. after reloading the page */
    (function () {
        var m = /[?&]session=([0-9a-f]{32})/.exec(location.search);

        if (!m) {
            return;
        }

        load(m[1]).then(function (found) {
            if (found) {
                connect();
            } else {
                showError('That session has ended or expired: create a new '
                          + 'one.');
            }
        }, function (err) {
            showError('Could not load the session: ' + err.message);
        });
    })();
})();
