package Test::Hookstream::IO;

# A buffered, non-blocking client socket (plain TCP or TLS) whose every
# wait is bounded. The HTTP and WebSocket clients read and write through it,
# so partial reads, partial writes and TLS record buffering are handled in
# one place.

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::SSL qw(SSL_VERIFY_NONE SSL_WANT_READ SSL_WANT_WRITE);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time sleep);

our $DEFAULT_TIMEOUT = 5;

sub connect {
    my ($class, %o) = @_;

    my $host    = $o{host} // '127.0.0.1';
    my $port    = $o{port} or die "Test::Hookstream::IO: no port\n";
    my $timeout = $o{timeout} // $DEFAULT_TIMEOUT;

    my $sock = IO::Socket::INET->new(
        PeerAddr => $host,
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => $timeout,
    );

    if (!$sock) {
        return (undef, "connect to $host:$port failed: "
                       . ($@ || $!));
    }

    setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);

    if ($o{tls}) {
        my $ok = IO::Socket::SSL->start_SSL($sock,
            SSL_verify_mode => SSL_VERIFY_NONE,
            SSL_hostname    => $o{sni} // 'localhost',
            Timeout         => $timeout,
            %{ $o{ssl_opts} || {} },
        );

        if (!$ok) {
            my $err = $IO::Socket::SSL::SSL_ERROR || $!;
            CORE::close($sock);
            return (undef, "TLS handshake with $host:$port failed: $err");
        }
    }

    $sock->blocking(0);

    my $self = bless {
        sock    => $sock,
        buf     => '',
        eof     => 0,
        error   => undef,
        tls     => $o{tls} ? 1 : 0,
        timeout => $timeout,
    }, $class;

    return ($self, undef);
}

sub sock    { $_[0]{sock} }
sub tls     { $_[0]{tls} }
sub is_eof  { $_[0]{eof} }
sub error   { $_[0]{error} }
sub pending { length $_[0]{buf} }

# The buffer is exposed so that parsers can consume from it in place.
sub buf_ref { \$_[0]{buf} }

sub _would_block {
    my ($self) = @_;

    return 1 if $!{EAGAIN} || $!{EWOULDBLOCK};

    if ($self->{tls}) {
        my $e = $IO::Socket::SSL::SSL_ERROR;
        return 1 if defined $e && ($e == SSL_WANT_READ
                                   || $e == SSL_WANT_WRITE);
    }

    return 0;
}

sub _wait_io {
    my ($self, $left) = @_;

    my $sel = IO::Select->new($self->{sock});

    if ($self->{tls} && defined $IO::Socket::SSL::SSL_ERROR
        && $IO::Socket::SSL::SSL_ERROR == SSL_WANT_WRITE)
    {
        return $sel->can_write($left);
    }

    return $sel->can_read($left);
}

# Read what is available into the buffer, waiting at most $timeout seconds.
# Returns the number of bytes added, 0 at end of stream (or on an error such
# as a reset, recorded in ->error), undef when the time ran out.
sub fill {
    my ($self, $timeout) = @_;

    return 0 if $self->{eof};

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;

    for (;;) {
        my $n = $self->{sock}->sysread(my $chunk, 65536);

        if (defined $n) {
            if ($n == 0) {
                $self->{eof} = 1;
                return 0;
            }

            $self->{buf} .= $chunk;
            return $n;
        }

        next if $!{EINTR};

        if (!$self->_would_block) {
            $self->{eof} = 1;
            $self->{error} = "read: " . ($!
                                 || $IO::Socket::SSL::SSL_ERROR
                                 || 'unknown error');
            return 0;
        }

        my $left = $deadline - time;
        return undef if $left <= 0;

        $self->_wait_io($left);
    }
}

# Write every byte or fail. Returns 1, or 0 with ->error set (peer closed,
# reset, or no progress within $timeout).
sub write_all {
    my ($self, $data, $timeout) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;
    my $off = 0;
    my $len = length $data;

    while ($off < $len) {
        my $n = $self->{sock}->syswrite($data, $len - $off, $off);

        if (defined $n) {
            $off += $n;
            $deadline = time + $timeout if $n > 0;
            next;
        }

        next if $!{EINTR};

        if (!$self->_would_block) {
            $self->{error} = "write: " . ($!
                                 || $IO::Socket::SSL::SSL_ERROR
                                 || 'unknown error');
            return 0;
        }

        my $left = $deadline - time;

        if ($left <= 0) {
            $self->{error} = "write: timed out after ${timeout}s with "
                             . ($len - $off) . " bytes unsent";
            return 0;
        }

        my $sel = IO::Select->new($self->{sock});

        if ($self->{tls} && defined $IO::Socket::SSL::SSL_ERROR
            && $IO::Socket::SSL::SSL_ERROR == SSL_WANT_READ)
        {
            $sel->can_read($left);

        } else {
            $sel->can_write($left);
        }
    }

    return 1;
}

# Take $n bytes from the buffer, reading more as needed. Returns undef on
# timeout or end of stream (the bytes stay buffered).
sub read_exact {
    my ($self, $n, $timeout) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;

    while (length $self->{buf} < $n) {
        my $left = $deadline - time;
        return undef if $left <= 0;

        my $r = $self->fill($left);
        return undef if !$r;
    }

    return substr($self->{buf}, 0, $n, '');
}

# Take bytes up to and including the first match of $re (a qr//).
sub read_until {
    my ($self, $re, $timeout) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;

    for (;;) {
        if ($self->{buf} =~ $re) {
            return substr($self->{buf}, 0, $+[0], '');
        }

        my $left = $deadline - time;
        return undef if $left <= 0;

        my $r = $self->fill($left);
        return undef if !$r;
    }
}

# Read until the peer closes; returns everything buffered. A timeout ends
# the read too (->is_eof tells which).
sub read_to_eof {
    my ($self, $timeout) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;

    while (!$self->{eof}) {
        my $left = $deadline - time;
        last if $left <= 0;
        last if !defined $self->fill($left);
    }

    return substr($self->{buf}, 0, length $self->{buf}, '');
}

# Wait for the peer to close the connection, keeping (not discarding)
# whatever it sends meanwhile. True if it closed within $timeout.
sub wait_eof {
    my ($self, $timeout) = @_;

    $timeout //= $self->{timeout};
    my $deadline = time + $timeout;

    while (!$self->{eof}) {
        my $left = $deadline - time;
        return 0 if $left <= 0;
        $self->fill($left);
    }

    return 1;
}

sub shutdown_write {
    my ($self) = @_;
    shutdown($self->{sock}, 1);
}

sub close {
    my ($self) = @_;

    return if !$self->{sock};

    if ($self->{tls}) {
        # no close_notify: tests want to see how the server copes with
        # a plain TCP close as well; an orderly TLS close is ->close_tls
        $self->{sock}->close(SSL_no_shutdown => 1, SSL_fast_shutdown => 1);

    } else {
        $self->{sock}->close;
    }

    $self->{sock} = undef;
    $self->{eof} = 1;
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $!, $?);
    $self->close if $self->{sock};
}

1;
