package Test::Hookstream::HTTP;

# A small HTTP/1.x client for the tests: builds a request (or sends raw
# bytes), reads one response framed by Content-Length, chunked encoding or
# the end of the connection, and never waits longer than its timeout.

use strict;
use warnings;

use Exporter qw(import);
use Time::HiRes qw(time sleep);

use Test::Hookstream::IO;

our @EXPORT_OK = qw(http_request read_response build_request);

sub _header_pairs {
    my ($h) = @_;

    return () if !defined $h;

    if (ref $h eq 'HASH') {
        return map { [$_, $h->{$_}] } sort keys %$h;
    }

    if (ref $h eq 'ARRAY') {
        my @pairs;
        my @flat = @$h;

        while (@flat) {
            my $item = shift @flat;

            if (ref $item eq 'ARRAY') {
                push @pairs, [@$item];

            } else {
                push @pairs, [$item, shift @flat];
            }
        }

        return @pairs;
    }

    # "Name: value" lines, as in a --- more_headers section
    my @pairs;

    for my $line (split /\r?\n/, $h) {
        next if $line !~ /\S/;

        if ($line =~ /^\s*([^:\s]+)\s*:\s?(.*?)\s*$/) {
            push @pairs, [$1, $2];

        } else {
            die "bad header line: '$line'\n";
        }
    }

    return @pairs;
}

# Returns the request bytes. A header given with an undef value suppresses
# the default of that name (Host, Connection, Content-Length).
sub build_request {
    my (%o) = @_;

    my $method  = $o{method} // 'GET';
    my $uri     = $o{uri} // '/';
    my $version = $o{http_version} // '1.1';
    my $body    = $o{body};

    utf8::encode($body) if defined $body && utf8::is_utf8($body);

    my @pairs = _header_pairs($o{headers});
    my %given = map { lc($_->[0]) => 1 } @pairs;

    my @out;

    if ($version eq '0.9') {
        return "$method $uri\r\n";
    }

    push @out, ['Host', $o{host_header} // 'localhost']
        if !$given{host} && $version ne '1.0';

    push @out, ['Connection', 'close']
        if !$given{connection} && $version eq '1.1';

    if (!$given{'content-length'} && !$given{'transfer-encoding'}
        && ((defined $body && length $body)
            || $method =~ /^(?:POST|PUT|PATCH)$/))
    {
        push @out, ['Content-Length', length($body // '')];
    }

    push @out, grep { defined $_->[1] } @pairs;

    my $req = "$method $uri HTTP/$version\r\n";
    $req .= "$_->[0]: $_->[1]\r\n" for @out;
    $req .= "\r\n";
    $req .= $body if defined $body;

    return $req;
}

sub _chunked_body {
    my ($io, $deadline) = @_;

    my $body = '';

    for (;;) {
        my $line = $io->read_until(qr/\r?\n/, $deadline - time);
        return (undef, 'chunked body: no chunk size') if !defined $line;

        if ($line !~ /^([0-9a-fA-F]+)/) {
            return (undef, "chunked body: bad chunk size line '$line'");
        }

        my $size = hex $1;

        if ($size == 0) {
            # trailers, up to an empty line
            for (;;) {
                my $t = $io->read_until(qr/\r?\n/, $deadline - time);
                return (undef, 'chunked body: no final CRLF')
                    if !defined $t;
                last if $t =~ /^\r?\n\z/;
            }

            return ($body, undef);
        }

        my $data = $io->read_exact($size, $deadline - time);
        return (undef, "chunked body: truncated chunk of $size bytes")
            if !defined $data;

        $body .= $data;

        return (undef, 'chunked body: no CRLF after chunk')
            if !defined $io->read_until(qr/\r?\n/, $deadline - time);
    }
}

# Read one response from a Test::Hookstream::IO. Options: timeout, head
# (the request was HEAD: no body). Always returns a Response; ->error says
# what went wrong when no complete response arrived.
sub read_response {
    my ($io, %o) = @_;

    my $timeout = $o{timeout} // 5;
    my $deadline = time + $timeout;

    my $head = $io->read_until(qr/\r?\n\r?\n/, $timeout);

    if (!defined $head) {
        my $left = ${ $io->buf_ref };
        return Test::Hookstream::Response->new(
            error => $io->is_eof
                     ? 'connection closed before a complete response'
                       . ($io->error ? ' (' . $io->error . ')' : '')
                     : "no complete response within ${timeout}s",
            raw_head => $left,
        );
    }

    my @lines = split /\r?\n/, $head;
    my $status_line = shift @lines // '';

    if ($status_line !~ m{^(HTTP/\d\.\d)\s+(\d{3})(?:\s+(.*))?$}) {
        return Test::Hookstream::Response->new(
            error    => "bad status line '$status_line'",
            raw_head => $head,
        );
    }

    my ($proto, $status, $reason) = ($1, $2, $3 // '');

    my (@list, %headers);

    for my $line (@lines) {
        if ($line =~ /^[ \t]+(.*)$/ && @list) {
            $list[-1][1] .= " $1";
            next;
        }

        next if $line !~ /^([^:]+):[ \t]*(.*?)[ \t]*$/;
        push @list, [$1, $2];
    }

    push @{ $headers{lc $_->[0]} }, $_->[1] for @list;

    my $r = Test::Hookstream::Response->new(
        proto       => $proto,
        status      => $status + 0,
        reason      => $reason,
        headers     => \%headers,
        header_list => \@list,
        raw_head    => $head,
        body        => '',
    );

    return $r if $o{head} || $status < 200 || $status == 204
                 || $status == 304;

    my $te = lc join ',', @{ $headers{'transfer-encoding'} || [] };
    my $cl = $headers{'content-length'};

    if ($te =~ /chunked/) {
        my ($body, $err) = _chunked_body($io, $deadline);
        $r->{body} = $body // ${ $io->buf_ref };
        $r->{error} = $err;
        $r->{chunked} = 1;

    } elsif ($cl) {
        my $n = $cl->[0];
        my $body = $io->read_exact($n, $deadline - time);

        if (!defined $body) {
            $r->{body} = ${ $io->buf_ref };
            $r->{error} = "body: got " . length($r->{body})
                          . " of $n bytes";

        } else {
            $r->{body} = $body;
        }

    } else {
        $r->{body} = $io->read_to_eof($deadline - time);
        $r->{error} = "body: no end of stream within ${timeout}s"
            if !$io->is_eof;
    }

    return $r;
}

# One request on a new connection. Options: method, uri, headers, body,
# http_version, host_header, host, port, tls, timeout; raw => bytes (or an
# array of pieces written chunk_delay seconds apart) replaces the built
# request. Returns a Test::Hookstream::Response.
sub http_request {
    my (%o) = @_;

    my $timeout = $o{timeout} // 5;

    my ($io, $err) = Test::Hookstream::IO->connect(
        host    => $o{host},
        port    => $o{port},
        tls     => $o{tls},
        timeout => $timeout,
    );

    return Test::Hookstream::Response->new(error => $err) if !$io;

    my @pieces;

    if (defined $o{raw}) {
        @pieces = ref $o{raw} eq 'ARRAY' ? @{ $o{raw} } : ($o{raw});

    } else {
        @pieces = (build_request(%o));
    }

    my $delay = $o{chunk_delay} // 0.05;

    for my $i (0 .. $#pieces) {
        sleep $delay if $i > 0;

        my $piece = $pieces[$i];
        utf8::encode($piece) if utf8::is_utf8($piece);

        if (!$io->write_all($piece, $timeout)) {
            # the server may have answered and closed early: read it
            last;
        }
    }

    my $method = $o{method} // '';

    if (defined $o{raw}) {
        ($method) = $pieces[0] =~ /^(\S+)/;
        $method //= '';
    }

    my $r = read_response($io, timeout => $timeout,
                          head => $method eq 'HEAD');

    $r->{io} = $io if $o{keep_open};

    return $r;
}


package Test::Hookstream::Response;

use strict;
use warnings;

use JSON::PP ();

sub new {
    my ($class, %f) = @_;

    return bless {
        status      => undef,
        reason      => '',
        headers     => {},
        header_list => [],
        body        => undef,
        error       => undef,
        %f,
    }, $class;
}

sub status      { $_[0]{status} }
sub reason      { $_[0]{reason} }
sub proto       { $_[0]{proto} }
sub body        { $_[0]{body} }
sub error       { $_[0]{error} }
sub raw_head    { $_[0]{raw_head} }
sub headers     { $_[0]{headers} }
sub header_list { @{ $_[0]{header_list} } }

# All values of a header, in order.
sub header_values {
    my ($self, $name) = @_;
    return @{ $self->{headers}{lc $name} || [] };
}

# The value of a header (several joined with ", "), undef if absent.
sub header {
    my ($self, $name) = @_;
    my $v = $self->{headers}{lc $name};
    return $v ? join(', ', @$v) : undef;
}

# The body decoded as JSON, or undef when it is not JSON.
sub json {
    my ($self) = @_;
    return undef if !defined $self->{body};
    my $v = eval { JSON::PP->new->utf8->allow_nonref->decode($self->{body}) };
    return $v;
}

# Summary for diagnostics.
sub dump {
    my ($self) = @_;

    return "no response: $self->{error}" if !defined $self->{status};

    my $s = $self->{raw_head} // '';
    my $body = $self->{body} // '';
    $body = substr($body, 0, 2000) . '...' if length $body > 2000;
    $s .= $body;
    $s .= "\n(error: $self->{error})" if $self->{error};

    return $s;
}

1;
