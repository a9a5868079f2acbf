package Test::Hookstream::WS;

# A WebSocket client for tests (RFC 6455, RFC 7692). It speaks the protocol
# correctly by default and can be told to break any part of it: handshake
# headers, frame bits, lengths, masking, fragmentation, raw bytes.
#
#   my $c = Test::Hookstream::WS->connect("/v1/ws?token=...", port => $p);
#   $c->upgraded or diag $c->status;
#   $c->send_text('{"type":"subscribe","channel":"events"}');
#   my $m = $c->recv_json;
#   my ($code, $reason, $closed) = $c->recv_close;

use strict;
use warnings;
use feature 'bitwise';

use Carp qw(croak);
use Compress::Raw::Zlib qw(Z_OK Z_STREAM_END Z_BUF_ERROR Z_SYNC_FLUSH);
use Digest::SHA qw(sha1_base64);
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time sleep);

use Test::Hookstream::HTTP ();
use Test::Hookstream::IO;

use constant {
    OP_CONT   => 0x0,
    OP_TEXT   => 0x1,
    OP_BINARY => 0x2,
    OP_CLOSE  => 0x8,
    OP_PING   => 0x9,
    OP_PONG   => 0xA,
};

use Exporter qw(import);
our @EXPORT_OK = qw(OP_CONT OP_TEXT OP_BINARY OP_CLOSE OP_PING OP_PONG);
our %EXPORT_TAGS = (opcodes => \@EXPORT_OK);

our $DEFAULT_TIMEOUT = 5;

# Frames larger than this from the server are treated as a broken stream.
our $MAX_FRAME = 256 * 1024 * 1024;

my $GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

my $JSON = JSON::PP->new->utf8->allow_nonref;

sub _random_bytes {
    my ($n) = @_;
    return join '', map { chr int rand 256 } 1 .. $n;
}

sub _bytes {
    my ($s) = @_;
    $s = '' if !defined $s;
    $s = "$s";
    utf8::encode($s) if utf8::is_utf8($s);
    return $s;
}

# ---------------------------------------------------------------------------
# connecting

# connect($path, %opt). Options:
#   host (127.0.0.1), port, tls, timeout (5 s), sni
#   headers       hashref (a value of undef removes that default header)
#                 or arrayref of [name, value] pairs appended in order
#   origin, protocols (string or arrayref), version (13), key (base64)
#   deflate       1 to offer permessage-deflate, or the full offer string
#   method (GET), http_version (1.1), host_header (localhost)
#   raw_handshake bytes sent instead of the built request
#   auto_pong     answer pings seen by recv_message/recv_json
# Always returns an object: ->upgraded is true after a 101 whose
# Sec-WebSocket-Accept is right; otherwise ->status, ->header, ->body and
# ->json describe the HTTP answer, and ->error any transport failure.
sub connect {
    my ($class, $path, %o) = @_;

    $path //= '/';

    my $timeout = $o{timeout} // $DEFAULT_TIMEOUT;

    my $self = bless {
        path        => $path,
        timeout     => $timeout,
        upgraded    => 0,
        status      => undef,
        response    => undef,
        error       => undef,
        controls    => [],
        skipped     => [],
        frames_in   => 0,
        close_frame => undef,
        close_sent  => 0,
        auto_pong   => $o{auto_pong} ? 1 : 0,
        deflate     => undef,
        last_text   => undef,
        partial     => undef,
    }, $class;

    my ($io, $err) = Test::Hookstream::IO->connect(
        host    => $o{host},
        port    => $o{port},
        tls     => $o{tls},
        timeout => $timeout,
        sni     => $o{sni},
    );

    if (!$io) {
        $self->{error} = $err;
        return $self;
    }

    $self->{io} = $io;

    my $key = $o{key} // encode_base64(_random_bytes(16), '');
    $self->{key} = $key;

    my $req;

    if (defined $o{raw_handshake}) {
        $req = $o{raw_handshake};

    } else {
        $req = $self->_handshake_request($path, $key, %o);
    }

    $self->{request} = $req;

    if (!$io->write_all(_bytes($req), $timeout)) {
        # the server may have answered already (and closed): read it below
        $self->{write_error} = $io->error;
    }

    my $r = Test::Hookstream::HTTP::read_response($io, timeout => $timeout);

    $self->{response} = $r;
    $self->{status} = $r->status;

    if (!defined $r->status) {
        $self->{error} = $r->error;
        return $self;
    }

    return $self if $r->status != 101;

    my $accept = $r->header('Sec-WebSocket-Accept') // '';
    my $want = sha1_base64($key . $GUID) . '=';

    $self->{accept_ok} = $accept eq $want ? 1 : 0;

    if (!$self->{accept_ok}) {
        $self->{error} = "bad Sec-WebSocket-Accept '$accept' "
                         . "(expected '$want')";
        return $self;
    }

    $self->{upgraded} = 1;
    $self->{subprotocol} = $r->header('Sec-WebSocket-Protocol');

    my $ext = $r->header('Sec-WebSocket-Extensions');
    $self->_setup_deflate($ext) if defined $ext;

    return $self;
}

sub _handshake_request {
    my ($self, $path, $key, %o) = @_;

    my @defaults = (
        ['Host', $o{host_header} // 'localhost'],
        ['Upgrade', 'websocket'],
        ['Connection', 'Upgrade'],
        ['Sec-WebSocket-Key', $key],
        ['Sec-WebSocket-Version', $o{version} // 13],
    );

    push @defaults, ['Origin', $o{origin}] if defined $o{origin};

    if (defined $o{protocols}) {
        my $p = $o{protocols};
        push @defaults, ['Sec-WebSocket-Protocol',
                         ref $p ? join(', ', @$p) : $p];
    }

    if ($o{deflate}) {
        push @defaults, ['Sec-WebSocket-Extensions',
                         $o{deflate} =~ /[a-z]/ ? $o{deflate}
                         : 'permessage-deflate; client_max_window_bits'];
    }

    my @extra;
    my $h = $o{headers};

    if (ref $h eq 'HASH') {
        my %lc = map { lc($_) => $_ } keys %$h;

        for my $d (@defaults) {
            my $k = $lc{lc $d->[0]};
            next if !defined $k;
            $d->[1] = $h->{$k};
            delete $lc{lc $d->[0]};
        }

        push @extra, map { [$_, $h->{$_}] } sort values %lc;

    } elsif (ref $h eq 'ARRAY') {
        @extra = Test::Hookstream::HTTP::_header_pairs($h);

    } elsif (defined $h) {
        @extra = Test::Hookstream::HTTP::_header_pairs($h);
    }

    my $method  = $o{method} // 'GET';
    my $version = $o{http_version} // '1.1';

    my $req = "$method $path HTTP/$version\r\n";

    for my $p (@defaults, @extra) {
        next if !defined $p->[1];
        $req .= "$p->[0]: $p->[1]\r\n";
    }

    return "$req\r\n";
}

sub _setup_deflate {
    my ($self, $ext) = @_;

    return if $ext !~ /permessage-deflate/i;

    my %p;

    for my $part (split /;/, $ext) {
        $part =~ s/^\s+|\s+$//g;
        next if $part eq '' || $part =~ /^permessage-deflate$/i;
        my ($k, $v) = split /\s*=\s*/, $part, 2;
        $v =~ s/^"|"$//g if defined $v;
        $p{lc $k} = $v // 1;
    }

    $self->{deflate} = {
        params          => \%p,
        server_no_ctx   => $p{server_no_context_takeover} ? 1 : 0,
        client_no_ctx   => $p{client_no_context_takeover} ? 1 : 0,
        client_bits     => ($p{client_max_window_bits}
                            && $p{client_max_window_bits} =~ /^\d+$/)
                           ? $p{client_max_window_bits} : 15,
    };
}

# ---------------------------------------------------------------------------
# accessors

sub upgraded    { $_[0]{upgraded} }
sub status      { $_[0]{status} }
sub error       { $_[0]{error} // ($_[0]{io} ? $_[0]{io}->error : undef) }
sub response    { $_[0]{response} }
sub request     { $_[0]{request} }
sub accept_ok   { $_[0]{accept_ok} }
sub subprotocol { $_[0]{subprotocol} }
sub io          { $_[0]{io} }
sub sock        { $_[0]{io} ? $_[0]{io}->sock : undef }
sub timed_out   { $_[0]{timed_out} }
sub last_text   { $_[0]{last_text} }

# the pings and pongs passed over by recv_message / recv_json
sub controls    { @{ $_[0]{controls} } }

# the frames passed over by recv_close
sub skipped     { @{ $_[0]{skipped} } }

# negotiated permessage-deflate parameters (undef when not negotiated)
sub deflate     { $_[0]{deflate} ? $_[0]{deflate}{params} : undef }

sub header {
    my ($self, $name) = @_;
    return $self->{response} ? $self->{response}->header($name) : undef;
}

sub headers {
    my ($self) = @_;
    return $self->{response} ? $self->{response}->headers : {};
}

sub body {
    my ($self) = @_;
    return $self->{response} ? $self->{response}->body : undef;
}

sub json {
    my ($self) = @_;
    return $self->{response} ? $self->{response}->json : undef;
}

# true once the server closed the TCP connection (does not wait)
sub eof {
    my ($self) = @_;
    return 1 if !$self->{io};
    $self->{io}->fill(0) if !$self->{io}->is_eof;
    return $self->{io}->is_eof;
}

# ---------------------------------------------------------------------------
# sending

# build_frame(%f) returns the bytes of one frame (class or object method):
#   fin (1), rsv (0..7; or rsv1/rsv2/rsv3 flags), opcode (1), payload ('')
#   mask (1), mask_key (4 bytes, random by default)
#   len_override  the number written in the length field
#   len_form      7, 16 or 64: the length encoding to use, minimal or not
sub build_frame {
    my ($self, %f) = @_;

    my $fin = $f{fin} // 1;
    my $rsv = $f{rsv} // 0;
    $rsv |= 4 if $f{rsv1};
    $rsv |= 2 if $f{rsv2};
    $rsv |= 1 if $f{rsv3};

    my $opcode  = $f{opcode} // OP_TEXT;
    my $payload = _bytes($f{payload});
    my $mask    = $f{mask} // 1;

    my $len = $f{len_override} // length $payload;

    my $form = $f{len_form}
               // ($len < 126 ? 7 : $len < 65536 ? 16 : 64);

    my $b0 = ($fin ? 0x80 : 0) | (($rsv & 7) << 4) | ($opcode & 0x0f);
    my $mbit = $mask ? 0x80 : 0;

    my $hdr = chr $b0;

    if ($form == 7) {
        croak "length $len does not fit the 7-bit form" if $len > 125;
        $hdr .= chr($mbit | $len);

    } elsif ($form == 16) {
        croak "length $len does not fit the 16-bit form" if $len > 65535;
        $hdr .= chr($mbit | 126) . pack('n', $len);

    } elsif ($form == 64) {
        $hdr .= chr($mbit | 127) . pack('Q>', $len);

    } else {
        croak "len_form must be 7, 16 or 64";
    }

    return $hdr . $payload if !$mask;

    my $key = $f{mask_key} // _random_bytes(4);
    croak "mask_key must be 4 bytes" if length $key != 4;

    return $hdr . $key . _mask($payload, $key);
}

sub _mask {
    my ($data, $key) = @_;

    my $n = length $data;
    return '' if !$n;

    my $stream = substr($key x (int($n / 4) + 1), 0, $n);

    return $data ^. $stream;
}

sub _io_or_die {
    my ($self) = @_;

    croak "WebSocket to $self->{path} not open: "
          . ($self->{error} // "status " . ($self->{status} // 'none'))
        if !$self->{io} || !$self->{upgraded} && !$self->{force_raw};

    return $self->{io};
}

# send_raw($bytes): write bytes as they are. True on success.
sub send_raw {
    my ($self, $bytes) = @_;

    my $io = $self->{io}
        or croak "WebSocket to $self->{path}: no connection: "
                 . ($self->{error} // '');

    return $io->write_all(_bytes($bytes), $self->{timeout});
}

# send_slowly($bytes, chunk => 1, delay => 0.005): write in small pieces
# with pauses, so the server sees every possible partial read.
sub send_slowly {
    my ($self, $bytes, %o) = @_;

    my $chunk = $o{chunk} // 1;
    my $delay = $o{delay} // 0.005;

    $bytes = _bytes($bytes);

    for (my $off = 0; $off < length $bytes; $off += $chunk) {
        return 0 if !$self->send_raw(substr($bytes, $off, $chunk));
        sleep $delay if $delay;
    }

    return 1;
}

sub send_frame {
    my ($self, %f) = @_;
    $self->_io_or_die;
    return $self->send_raw($self->build_frame(%f));
}

# send_frames(\%frame, \%frame, ...): all frames in one write (pipelined)
sub send_frames {
    my ($self, @frames) = @_;
    $self->_io_or_die;
    return $self->send_raw(join '', map { $self->build_frame(%$_) }
                                    @frames);
}

sub _compress {
    my ($self, $data) = @_;

    my $d = $self->{deflate};

    if (!$d->{deflater} || $d->{client_no_ctx}) {
        my ($z, $st) = Compress::Raw::Zlib::Deflate->new(
            -WindowBits   => -$d->{client_bits},
            -AppendOutput => 1,
        );
        croak "deflateInit: $st" if !$z;
        $d->{deflater} = $z;
    }

    my $out = '';
    my $st = $d->{deflater}->deflate($data, $out);
    croak "deflate: $st" if $st != Z_OK;
    $st = $d->{deflater}->flush($out, Z_SYNC_FLUSH);
    croak "deflate flush: $st" if $st != Z_OK;

    $out =~ s/\x00\x00\xff\xff\z//;

    return $out;
}

sub _decompress {
    my ($self, $data) = @_;

    my $d = $self->{deflate}
        or return (undef, 'compressed frame without permessage-deflate');

    if (!$d->{inflater} || $d->{server_no_ctx}) {
        my ($z, $st) = Compress::Raw::Zlib::Inflate->new(
            -WindowBits   => -15,
            -AppendOutput => 1,
            -ConsumeInput => 1,
            -LimitOutput  => 0,
        );
        return (undef, "inflateInit: $st") if !$z;
        $d->{inflater} = $z;
    }

    my $in = $data . "\x00\x00\xff\xff";
    my $out = '';
    my $st = $d->{inflater}->inflate($in, $out);

    return (undef, "inflate: $st")
        if $st != Z_OK && $st != Z_STREAM_END && $st != Z_BUF_ERROR;

    return ($out, undef);
}

# A data message; compress => 0|1 overrides the default (compress when
# permessage-deflate was negotiated); other options go to build_frame.
sub _send_data {
    my ($self, $opcode, $data, %o) = @_;

    $self->_io_or_die;

    $data = _bytes($data);

    my $compress = $o{compress} // ($self->{deflate} ? 1 : 0);
    delete $o{compress};

    if ($compress) {
        croak "permessage-deflate was not negotiated" if !$self->{deflate};
        $data = $self->_compress($data);
        $o{rsv1} = 1;
    }

    return $self->send_raw($self->build_frame(opcode => $opcode,
                                              payload => $data, %o));
}

sub send_text   { my ($s, $d, %o) = @_; $s->_send_data(OP_TEXT, $d, %o) }
sub send_binary { my ($s, $d, %o) = @_; $s->_send_data(OP_BINARY, $d, %o) }

sub send_json {
    my ($self, $v, %o) = @_;
    return $self->send_text($JSON->encode($v), %o);
}

sub send_ping {
    my ($self, $p, %o) = @_;
    $self->_io_or_die;
    return $self->send_raw($self->build_frame(opcode => OP_PING,
                                              payload => $p // '', %o));
}

sub send_pong {
    my ($self, $p, %o) = @_;
    $self->_io_or_die;
    return $self->send_raw($self->build_frame(opcode => OP_PONG,
                                              payload => $p // '', %o));
}

# send_close() sends an empty close; send_close($code, $reason) the usual
# one. Any code is accepted, so invalid ones can be tested.
sub send_close {
    my ($self, $code, $reason, %o) = @_;

    $self->_io_or_die;

    my $payload = '';
    $payload = pack('n', $code) . _bytes($reason // '') if defined $code;

    $self->{close_sent} = 1;

    return $self->send_raw($self->build_frame(opcode => OP_CLOSE,
                                              payload => $payload, %o));
}

# send_fragmented($opcode, \@pieces, %o): one message in several frames;
# interleave => { after => $i, opcode => OP_PING, payload => ... } puts a
# control frame after fragment $i; all of it goes in one write.
sub send_fragmented {
    my ($self, $opcode, $pieces, %o) = @_;

    my @frames;

    for my $i (0 .. $#$pieces) {
        push @frames, {
            fin     => $i == $#$pieces ? 1 : 0,
            opcode  => $i == 0 ? $opcode : OP_CONT,
            payload => $pieces->[$i],
        };

        if ($o{interleave} && ($o{interleave}{after} // 0) == $i) {
            my %c = %{ $o{interleave} };
            delete $c{after};
            push @frames, { opcode => OP_PING, %c };
        }
    }

    return $self->send_frames(@frames);
}

# ---------------------------------------------------------------------------
# receiving

# recv_frame($timeout): the next frame as { fin, rsv, opcode, payload,
# masked, length }, or undef when nothing came within $timeout (->timed_out
# is then true) or the connection ended (->eof). Payloads are unmasked
# here; a server must not mask, and ->{masked} tells if it did.
sub recv_frame {
    my ($self, $timeout) = @_;

    my $io = $self->{io} or return undef;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;
    my $buf = $io->buf_ref;

    $self->{timed_out} = 0;

    for (;;) {
        my $f = $self->_parse_frame($buf);

        if ($f) {
            $self->{frames_in}++;
            return $f;
        }

        my $left = $deadline - time;
        my $r = $left > 0 ? $io->fill($left) : undef;

        if (!defined $r) {
            $self->{timed_out} = 1;
            return undef;
        }

        return undef if $r == 0;
    }
}

sub _parse_frame {
    my ($self, $buf) = @_;

    my $have = length $$buf;
    return undef if $have < 2;

    my ($b0, $b1) = unpack 'CC', $$buf;
    my $masked = $b1 & 0x80 ? 1 : 0;
    my $len = $b1 & 0x7f;
    my $off = 2;

    if ($len == 126) {
        return undef if $have < 4;
        $len = unpack 'n', substr($$buf, 2, 2);
        $off = 4;

    } elsif ($len == 127) {
        return undef if $have < 10;
        $len = unpack 'Q>', substr($$buf, 2, 8);
        $off = 10;
    }

    croak "server frame of $len bytes is beyond the client's limit"
        if $len > $MAX_FRAME;

    my $key;

    if ($masked) {
        return undef if $have < $off + 4;
        $key = substr($$buf, $off, 4);
        $off += 4;
    }

    return undef if $have < $off + $len;

    my $hdr = substr($$buf, 0, $off, '');
    my $payload = substr($$buf, 0, $len, '');

    $payload = _mask($payload, $key) if $masked;

    return {
        fin     => $b0 & 0x80 ? 1 : 0,
        rsv     => ($b0 >> 4) & 7,
        opcode  => $b0 & 0x0f,
        masked  => $masked,
        length  => $len,
        payload => $payload,
        header  => $hdr,
    };
}

# recv_message($timeout): the next data message, its fragments joined and
# inflated: { opcode, payload, frames, compressed }. Pings and pongs on
# the way are kept in ->controls (and pings answered with auto_pong). A
# close frame ends the wait (undef); recv_close then returns it.
sub recv_message {
    my ($self, $timeout) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;

    return undef if $self->{close_frame};

    my $msg = $self->{partial};

    for (;;) {
        my $left = $deadline - time;
        $left = 0 if $left < 0;

        my $f = $self->recv_frame($left);

        if (!$f) {
            $self->{partial} = $msg;
            return undef;
        }

        my $op = $f->{opcode};

        if ($op == OP_CLOSE) {
            $self->{close_frame} = $f;
            $self->{partial} = undef;
            return undef;
        }

        if ($op == OP_PING || $op == OP_PONG) {
            push @{ $self->{controls} }, $f;
            $self->send_pong($f->{payload})
                if $op == OP_PING && $self->{auto_pong};
            next;
        }

        if ($op == OP_CONT) {
            croak "continuation frame without a message" if !$msg;
            $msg->{payload} .= $f->{payload};
            $msg->{frames}++;

        } else {
            croak "new data frame (opcode $op) inside a fragmented message"
                if $msg;

            $msg = {
                opcode     => $op,
                payload    => $f->{payload},
                frames     => 1,
                compressed => ($f->{rsv} & 4) ? 1 : 0,
                rsv        => $f->{rsv},
            };
        }

        next if !$f->{fin};

        $self->{partial} = undef;

        if ($msg->{compressed}) {
            my ($out, $err) = $self->_decompress($msg->{payload});
            croak "server message: $err" if defined $err;
            $msg->{payload} = $out;
        }

        $self->{last_text} = $msg->{payload} if $msg->{opcode} == OP_TEXT;

        return $msg;
    }
}

# recv_text($timeout): the payload of the next text message (bytes, as
# sent), undef when none came; dies on a binary message.
sub recv_text {
    my ($self, $timeout) = @_;

    my $m = $self->recv_message($timeout) or return undef;

    croak "expected a text message, got opcode $m->{opcode}"
        if $m->{opcode} != OP_TEXT;

    return $m->{payload};
}

# recv_json($timeout): the next text message decoded, undef when none came
# in time; dies when it is not JSON. The raw text stays in ->last_text.
sub recv_json {
    my ($self, $timeout) = @_;

    my $text = $self->recv_text($timeout);
    return undef if !defined $text;

    my $v = eval { $JSON->decode($text) };
    croak "server sent a text message that is not JSON ($@): $text"
        if $@;

    return $v;
}

# recv_json_until($pred, $timeout): JSON messages until $pred->($msg) is
# true (that one is returned) or time runs out; the others are returned
# as a second value in list context.
sub recv_json_until {
    my ($self, $pred, $timeout) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;
    my @passed;

    for (;;) {
        my $left = $deadline - time;
        last if $left <= 0;

        my $m = $self->recv_json($left);
        last if !defined $m;

        return wantarray ? ($m, \@passed) : $m if $pred->($m);

        push @passed, $m;
    }

    return wantarray ? (undef, \@passed) : undef;
}

# recv_close($timeout, reply => 1): wait for the server's close frame,
# passing over data frames (kept in ->skipped). Answers it with a close
# (unless reply => 0 or a close was sent already), then waits for the
# server to end the TCP connection. Returns ($code, $reason, $closed):
# $code is 1005 for an empty close frame, undef when no close came;
# $closed is true when the TCP connection ended within the timeout.
sub recv_close {
    my ($self, $timeout, %o) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;

    my $f = delete $self->{close_frame};

    while (!$f) {
        my $left = $deadline - time;
        $left = 0 if $left < 0;

        my $fr = $self->recv_frame($left);
        last if !$fr;

        if ($fr->{opcode} == OP_CLOSE) {
            $f = $fr;
            last;
        }

        push @{ $self->{skipped} }, $fr;
    }

    my $io = $self->{io};

    if (!$f) {
        my $closed = $io ? $io->wait_eof(0) : 1;
        return (undef, undef, $closed);
    }

    $self->{close_received} = $f;

    my ($code, $reason) = (1005, '');

    if (length $f->{payload} >= 2) {
        $code = unpack 'n', $f->{payload};
        $reason = substr($f->{payload}, 2);

    } elsif (length $f->{payload} == 1) {
        $code = undef;
        $reason = $f->{payload};
    }

    if (($o{reply} // 1) && !$self->{close_sent}) {
        my $echo = defined $code && $code != 1005 ? pack('n', $code) : '';
        $self->{close_sent} = 1;
        $io->write_all($self->build_frame(opcode => OP_CLOSE,
                                          payload => $echo),
                       $self->{timeout});
    }

    my $left = $deadline - time;
    $left = 0.5 if $left < 0.5;

    my $closed = $io->wait_eof($left);

    return ($code, $reason, $closed);
}

# close($code = 1000, $reason = ''): the client-initiated close handshake.
# Returns what recv_close returns for the server's answer.
sub close {
    my ($self, $code, $reason, $timeout) = @_;

    return (undef, undef, 1) if !$self->{io};

    if (!$self->{close_sent} && $self->{upgraded}) {
        $self->send_close($code // 1000, $reason // '');
    }

    return $self->recv_close($timeout, reply => 0);
}

# wait_eof($timeout): true when the server ends the TCP connection within
# $timeout; data that arrives meanwhile stays readable.
sub wait_eof {
    my ($self, $timeout) = @_;
    return 1 if !$self->{io};
    return $self->{io}->wait_eof($timeout // $self->{timeout});
}

# disconnect: drop the TCP connection without a close handshake
sub disconnect {
    my ($self) = @_;
    $self->{io}->close if $self->{io};
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $!, $?);
    $self->{io}->close if $self->{io};
}

1;
