// The HTTP transport that every HTTP listener of the server runs on (the HTTP
// face, http_server.h, and the metrics endpoint, metrics_http.h): cpp-httplib
// (Debian's libcpp-httplib 0.11) for the protocol, with the accepting and the
// threads done here.
//
// A bounded pool of worker threads serves the connections: one thread per open
// connection while it is being served, so a stream costs one worker thread
// (blocked in poll()/write(), a few tens of KiB of touched stack) for its whole
// life. Connections beyond the pool wait in a bounded queue; beyond that, one
// more thread (the refuser) reads their heads so the handlers can answer 503
// (CurrentConnectionOverloaded); beyond that, the accepting thread answers
// them itself.
//
// One thread accepts (not httplib's accept loop), and waits for each
// connection's request head to arrive in full (looking at it with MSG_PEEK,
// never reading it, for many connections at once with epoll) before a worker
// takes the connection (over TLS: the client's first record). A client that
// trickles its head costs a descriptor and a few bytes, never a worker or the
// accepting thread; a head must arrive within the read timeout (10 s), the
// first byte within the keep-alive timeout (5 s).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace httplib {
class Server;
}

namespace streamgen {

struct HttpTransportOptions {
  std::string listen;                       // HOST:PORT; port 0 picks a free one
  std::string listen_flag = "http-listen";  // the flag that errors name ("--http-listen=...")
  std::string tls_cert_file;                // PEM; with tls_key_file: HTTPS
  std::string tls_key_file;                 // PEM
  std::string tls_client_ca_file;           // PEM; set: clients must present a cert it signed
  int max_body_bytes = 4 << 20;             // larger request bodies: 413 (httplib's)
  int threads = 80;                         // worker threads (open connections being served)
  int max_pending_connections = 64;         // accepted connections waiting for a worker
  int write_timeout_s = 30;                 // a reader that takes nothing for this long is dropped
};

class HttpTransport {
 public:
  // httplib's read timeout (per read, on a worker), and the time a request
  // head has to arrive in full after its connection is accepted.
  static constexpr int kReadTimeoutS = 10;
  // The keep-alive timeout, and the time a new connection has to send its
  // first byte.
  static constexpr int kKeepAliveTimeoutS = 5;

  // The response the accepting thread writes itself to a connection no
  // worker takes: `status` 503 (the workers' queue and the refuser's are
  // full) or 408 (the head did not arrive in full in time); `head` what had
  // arrived of the request; `sock` the connection. Returns the response's
  // bytes (status line, headers, body). Called on the accepting thread.
  using Answer = std::function<std::string(int status, absl::string_view head, int sock)>;

  // The httplib server (HTTPS when tls_cert_file is set), its limits and
  // timeouts set, nothing bound yet: install the handlers on server(), then
  // Start(). Errors name the TLS flags.
  static absl::StatusOr<std::unique_ptr<HttpTransport>> Create(HttpTransportOptions options);
  ~HttpTransport();  // Stop()

  httplib::Server& server() { return *server_; }

  // Binds, listens and starts the accepting thread and the workers.
  // `answer` null: a plain-text answer. Errors name the listen flag. Call once.
  absl::Status Start(Answer answer);
  // Stops accepting, ends keep-alive loops and streams' bodies (as httplib's
  // stop()), and joins the workers (streams must be over). Idempotent.
  void Stop();
  int port() const { return port_; }
  const HttpTransportOptions& options() const { return options_; }

  // On a thread that serves a connection (in a handler): the connection's
  // socket, which httplib 0.11 does not hand to handlers (-1: none).
  static int CurrentSocket();
  // On a thread that serves a connection: true when it came while the workers
  // had no room (the refuser's). The handlers answer it 503 at once.
  static bool CurrentConnectionOverloaded();
  // The numeric address of the peer of `sock` ("" when unknown), its port in `*port`.
  static std::string PeerHost(int sock, int* port);

  class ConnectionPool;
  class Acceptor;

 private:
  explicit HttpTransport(HttpTransportOptions options);

  const HttpTransportOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<ConnectionPool> workers_;  // serve connections
  std::unique_ptr<ConnectionPool> refuser_;  // serves those the workers have no room for
  std::unique_ptr<Acceptor> acceptor_;       // accepts; waits for request heads
  int port_ = 0;
};

}  // namespace streamgen
