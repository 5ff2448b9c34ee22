#include "server/http_transport.h"

// Debian's libcpp-httplib.so is built with OpenSSL, zlib and brotli; its
// pkg-config Cflags define the same CPPHTTPLIB_* macros for this header (the
// class layouts depend on them).
#include <httplib.h>

#include <fcntl.h>
#include <netdb.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cli_flags.h"
#include "server/logging.h"

namespace streamgen {
namespace {

// Set on a thread while it serves a connection the workers had no room for
// (the refuser's): the pre-routing handler answers it 503.
thread_local bool tls_overloaded = false;
// The connection the calling thread serves (-1: none).
thread_local int tls_connection_socket = -1;

constexpr int kReadTimeoutS = HttpTransport::kReadTimeoutS;
constexpr int kKeepAliveTimeoutS = HttpTransport::kKeepAliveTimeoutS;
// Connections waiting for their request head (at least the workers and their
// queue); beyond this, the one waiting longest is closed.
constexpr size_t kMaxWaitingHeads = 1024;

// httplib 0.11 serves a connection only from its own accept loop: the method
// that serves one, Server::process_and_close_socket(sock) (virtual: SSLServer's
// does the TLS handshake first), is private. The transport runs its own accept loop
// and calls it through a pointer to the member taken where access is not
// checked, the template argument of an explicit instantiation ([temp.spec]).
struct ServeSocketTag {
  using type = bool (httplib::Server::*)(socket_t);
  friend type Member(ServeSocketTag);
};
template <typename Tag, typename Tag::type kMember>
struct PrivateMember {
  friend typename Tag::type Member(Tag) { return kMember; }
};
template struct PrivateMember<ServeSocketTag, &httplib::Server::process_and_close_socket>;

// The socket httplib bound and listens on (Server::svr_sock_, protected). Its
// connections end their keep-alive loop, and streams their body, once it is
// INVALID_SOCKET (what httplib's stop() does).
struct ListenSocketOf : httplib::Server {
  static std::atomic<socket_t>& Get(httplib::Server& server) {
    return server.*&ListenSocketOf::svr_sock_;
  }
};

// Serves the connection `sock` on the calling thread, keep-alive requests
// included, and closes it.
void ServeConnection(httplib::Server& server, int sock, bool overloaded) {
  tls_overloaded = overloaded;
  tls_connection_socket = sock;
  (server.*Member(ServeSocketTag{}))(sock);
  tls_overloaded = false;
  tls_connection_socket = -1;
}

std::string NumericHost(const sockaddr_storage& address, socklen_t length, int* port) {
  char host[NI_MAXHOST] = "", service[NI_MAXSERV] = "";
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, host, sizeof(host), service,
                  sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "";
  }
  *port = std::atoi(service);
  return host;
}

}  // namespace

// Connections waiting for a thread: at most `max_waiting`; `serve` runs on
// one of `threads` threads.
class HttpTransport::ConnectionPool {
 public:
  ConnectionPool(size_t threads, size_t max_waiting, std::function<void(int)> serve)
      : max_waiting_(max_waiting), serve_(std::move(serve)) {
    for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ConnectionPool() { Shutdown(); }

  // Queues `sock` (an idle thread takes it, or it waits); false when
  // `max_waiting` connections already wait for a busy thread.
  bool TryEnqueue(int sock) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Connections handed to idle threads that have not woken yet do not wait.
      if (shutdown_ || jobs_.size() >= idle_ + max_waiting_) return false;
      jobs_.push_back(sock);
    }
    cv_.notify_one();
    return true;
  }

  // Serves what is queued (once the server is stopping, httplib closes such a
  // connection without reading it) and joins the threads. Idempotent.
  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  }

 private:
  void Work() {
    while (true) {
      int sock;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ++idle_;
        cv_.wait(lock, [this] { return shutdown_ || !jobs_.empty(); });
        --idle_;
        if (jobs_.empty()) return;  // shut down
        sock = jobs_.front();
        jobs_.pop_front();
      }
      serve_(sock);
    }
  }

  const size_t max_waiting_;
  const std::function<void(int)> serve_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> jobs_;
  size_t idle_ = 0;  // threads waiting for a connection
  bool shutdown_ = false;
  std::vector<std::thread> workers_;
};

// The accepting thread. It accepts every connection at once and waits until
// its request head has arrived in full before a worker takes it: it looks at
// the bytes with MSG_PEEK (httplib reads them later, from the start) and waits
// for more with edge-triggered epoll, for all such connections at once. So a
// client that trickles its head costs a descriptor and an entry here, never a
// worker and never this thread: every call it makes returns at once.
//
// Over TLS the bytes are encrypted: the wait is for the client's first TLS
// record (its ClientHello), and the handshake and the head are read on the
// worker, with httplib's read timeout.
class HttpTransport::Acceptor {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    int listen_fd = -1;
    bool tls = false;
    size_t max_waiting = 64;  // connections waiting for their head; beyond: the oldest goes
    Clock::duration first_byte_timeout = std::chrono::seconds(kKeepAliveTimeoutS);
    Clock::duration head_timeout = std::chrono::seconds(kReadTimeoutS);
    int write_timeout_s = 30;
  };
  // `dispatch(sock)`: a worker (or the refuser) takes the connection; false
  // when neither has room. `answer(status, head, sock)`: the bytes of the
  // response this thread writes itself (503: no room; 408: the head did not
  // arrive in time), `head` what had arrived.
  using Dispatch = std::function<bool(int sock)>;
  using Answer = std::function<std::string(int status, absl::string_view head, int sock)>;

  Acceptor(Options options, Dispatch dispatch, Answer answer)
      : options_(options),
        dispatch_(std::move(dispatch)),
        answer_(std::move(answer)),
        peek_(kPeekBytes) {}
  ~Acceptor() {
    Stop();
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  absl::Status Start() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int flags = fcntl(options_.listen_fd, F_GETFL);
    epoll_event listen_event{}, wake_event{};
    listen_event.events = EPOLLIN;  // level-triggered: accepted until EAGAIN anyway
    listen_event.data.fd = options_.listen_fd;
    wake_event.events = EPOLLIN;
    wake_event.data.fd = wake_fd_;
    if (epoll_fd_ < 0 || wake_fd_ < 0 || flags < 0 ||
        fcntl(options_.listen_fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
        epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, options_.listen_fd, &listen_event) != 0 ||
        epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &wake_event) != 0) {
      return absl::InternalError(absl::StrCat("epoll: ", std::strerror(errno)));
    }
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

  // Stops accepting and closes the connections still waiting. Idempotent.
  void Stop() {
    if (!thread_.joinable()) return;
    stopping_.store(true);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t written = write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }

 private:
  // A head at least this large goes to a worker as it is (httplib reads the
  // rest and answers 431 / 400 when it is too large): far below what a socket
  // buffers (a peek never sees more than the receive window).
  static constexpr size_t kPeekBytes = 32 << 10;
  // An answered connection is read and discarded this long for the client to
  // read the answer (closing with unread bytes would reset it first).
  static constexpr Clock::duration kLinger = std::chrono::seconds(2);

  struct Connection {
    uint64_t order = 0;  // accept order: the oldest is evicted first
    Clock::time_point deadline;
    bool got_bytes = false;
    bool closing = false;  // answered: drained until the client closes, or kLinger
  };

  void Loop() {
    epoll_event events[64];
    while (!stopping_.load()) {
      int n = epoll_wait(epoll_fd_, events, 64, TimeoutMs(Clock::now()));
      if (n < 0 && errno != EINTR) {
        LogEvent(spdlog::level::err, "http accept", {{"error", std::strerror(errno)}});
        break;
      }
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == wake_fd_) {
          uint64_t count;
          [[maybe_unused]] ssize_t got = read(wake_fd_, &count, sizeof(count));
        } else if (fd == options_.listen_fd) {
          AcceptAll();
        } else {
          // (An event for a descriptor closed in this batch and reused by an
          // accept only makes Check look at the new connection early.)
          Check(fd, (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
        }
      }
      Expire(Clock::now());
    }
    while (!order_.empty()) Close(order_.begin()->second);
  }

  void AcceptAll() {
    while (true) {
      int fd = accept4(options_.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: the oldest waiting connection makes room, else
          // a short pause (as httplib's loop).
          if (!order_.empty()) {
            Close(order_.begin()->second);
            continue;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return;  // EAGAIN: all accepted
      }
      // httplib's accept loop sets these (its reads and writes poll first).
      timeval read_timeout{kReadTimeoutS, 0}, write_timeout{options_.write_timeout_s, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &read_timeout, sizeof(read_timeout));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &write_timeout, sizeof(write_timeout));
      Connection& connection = connections_[fd];
      connection = Connection();
      connection.order = next_order_++;
      connection.deadline = Clock::now() + options_.first_byte_timeout;
      order_[connection.order] = fd;
      epoll_event event{};
      event.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
      event.data.fd = fd;
      if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
        Forget(fd, /*in_epoll=*/false);
        close(fd);
        continue;
      }
      Check(fd, false);  // bytes that came with the connection (no edge for them)
      while (connections_.size() > options_.max_waiting) Close(order_.begin()->second);
    }
  }

  // Whether `bytes` (what has arrived) hold the whole request head.
  bool HeadIn(absl::string_view bytes) const {
    if (options_.tls) {
      // A TLS record: type 22 (handshake), version (2 bytes), length (2 bytes).
      // Anything else is not TLS: the worker refuses it at once.
      if (static_cast<unsigned char>(bytes[0]) != 22) return true;
      if (bytes.size() < 5) return false;
      size_t length = (static_cast<unsigned char>(bytes[3]) << 8) | static_cast<unsigned char>(bytes[4]);
      return bytes.size() >= 5 + length;
    }
    return bytes.find("\r\n\r\n") != absl::string_view::npos ||
           bytes.find("\n\n") != absl::string_view::npos;
  }

  // What has arrived on `fd` (peeked, not read); -1 with errno on error.
  ssize_t Peek(int fd) { return recv(fd, peek_.data(), peek_.size(), MSG_PEEK | MSG_DONTWAIT); }

  void Check(int fd, bool peer_closed) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    if (it->second.closing) {
      if (Drain(fd)) Close(fd);
      return;
    }
    ssize_t n = Peek(fd);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {  // closed (or reset) before a byte of the head
      Close(fd);
      return;
    }
    if (!it->second.got_bytes) {
      it->second.got_bytes = true;
      it->second.deadline += options_.head_timeout - options_.first_byte_timeout;
    }
    absl::string_view head(peek_.data(), static_cast<size_t>(n));
    // A peer that sent part of a head and closed its side: httplib answers what came.
    if (HeadIn(head) || static_cast<size_t>(n) >= peek_.size() || peer_closed) {
      Forget(fd, /*in_epoll=*/true);
      if (dispatch_(fd)) return;
      if (options_.tls) {
        close(fd);  // no plaintext answer on a TLS port
      } else {
        Respond(fd, 503, head);
      }
    }
  }

  // Connections past their deadline: nothing sent (closed), a head not in
  // full (408 once its request line is in, else closed), answered ones.
  void Expire(Clock::time_point now) {
    std::vector<int> expired;
    for (const auto& [order, fd] : order_) {
      if (connections_[fd].deadline <= now) expired.push_back(fd);
    }
    for (int fd : expired) {
      auto it = connections_.find(fd);
      if (it == connections_.end()) continue;  // evicted meanwhile
      const Connection& connection = it->second;
      if (connection.closing || !connection.got_bytes || options_.tls) {
        Close(fd);
        continue;
      }
      ssize_t n = Peek(fd);
      absl::string_view head(peek_.data(), n > 0 ? static_cast<size_t>(n) : 0);
      if (head.find('\n') == absl::string_view::npos) {
        Close(fd);  // not even a request line: nothing to answer (as httplib)
      } else {
        Forget(fd, /*in_epoll=*/true);
        Respond(fd, 408, head);
      }
    }
  }

  int TimeoutMs(Clock::time_point now) const {
    if (order_.empty()) return -1;
    Clock::time_point first = Clock::time_point::max();
    for (const auto& [fd, connection] : connections_) first = std::min(first, connection.deadline);
    if (first <= now) return 0;
    return static_cast<int>(
        std::chrono::ceil<std::chrono::milliseconds>(first - now).count());
  }

  // Writes the answer to a connection no worker has, then lingers: the
  // client's bytes are read and discarded until it closes (or kLinger).
  void Respond(int fd, int status, absl::string_view head) {
    std::string bytes = answer_(status, head, fd);
    // A fresh connection's send buffer takes a few hundred bytes at once.
    [[maybe_unused]] ssize_t sent = send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    Connection& connection = connections_[fd];
    connection = Connection();
    connection.order = next_order_++;
    connection.deadline = Clock::now() + kLinger;
    connection.closing = true;
    order_[connection.order] = fd;
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0 || Drain(fd)) {
      Close(fd);
      return;
    }
    while (connections_.size() > options_.max_waiting) Close(order_.begin()->second);
  }

  // Reads and discards what has arrived; true once the client closed (or on error).
  bool Drain(int fd) {
    char buffer[16 << 10];
    for (int i = 0; i < 64; ++i) {
      ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) continue;
      return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return false;
  }

  // Closes a connection this thread holds. Unread bytes are discarded first, so
  // that the client sees an orderly end (FIN), not a reset.
  void Close(int fd) {
    Drain(fd);
    Forget(fd, /*in_epoll=*/true);
    close(fd);
  }

  void Forget(int fd, bool in_epoll) {
    auto it = connections_.find(fd);
    if (it == connections_.end()) return;
    if (in_epoll) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    order_.erase(it->second.order);
    connections_.erase(it);
  }

  const Options options_;
  const Dispatch dispatch_;
  const Answer answer_;
  std::vector<char> peek_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  // Only the accepting thread touches these.
  std::unordered_map<int, Connection> connections_;
  std::map<uint64_t, int> order_;  // accept order -> descriptor
  uint64_t next_order_ = 0;
};

namespace {

// The answer without a worker when the listener has no handler-specific one.
std::string PlainAnswer(int status, absl::string_view /*head*/, int /*sock*/) {
  const char* text = status == 503 ? "too many open connections; retry\n"
                                   : "the request head did not arrive in full in time\n";
  return absl::StrCat("HTTP/1.1 ", status,
                      status == 503 ? " Service Unavailable" : " Request Timeout",
                      "\r\nContent-Type: text/plain\r\nContent-Length: ", std::strlen(text),
                      "\r\nConnection: close\r\n", status == 503 ? "Retry-After: 1\r\n" : "",
                      "\r\n", text);
}

}  // namespace

int HttpTransport::CurrentSocket() { return tls_connection_socket; }

bool HttpTransport::CurrentConnectionOverloaded() { return tls_overloaded; }

std::string HttpTransport::PeerHost(int sock, int* port) {
  sockaddr_storage peer{};
  socklen_t length = sizeof(peer);
  *port = 0;
  if (getpeername(sock, reinterpret_cast<sockaddr*>(&peer), &length) != 0) return "";
  return NumericHost(peer, length, port);
}

HttpTransport::HttpTransport(HttpTransportOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<HttpTransport>> HttpTransport::Create(
    HttpTransportOptions options) {
  std::unique_ptr<HttpTransport> transport(new HttpTransport(std::move(options)));
  const HttpTransportOptions& o = transport->options_;
  if (!o.tls_cert_file.empty()) {
    auto tls = std::make_unique<httplib::SSLServer>(
        o.tls_cert_file.c_str(), o.tls_key_file.c_str(),
        o.tls_client_ca_file.empty() ? nullptr : o.tls_client_ca_file.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls-cert / --tls-key / --tls-client-ca: the listener of --", o.listen_flag,
          " cannot load them"));
    }
    transport->server_ = std::move(tls);
  } else {
    transport->server_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& server = *transport->server_;
  server.set_payload_max_length(static_cast<size_t>(o.max_body_bytes));
  server.set_keep_alive_max_count(1000);
  server.set_keep_alive_timeout(kKeepAliveTimeoutS);
  server.set_read_timeout(kReadTimeoutS);
  server.set_write_timeout(o.write_timeout_s);
  // httplib's default socket options set SO_REUSEPORT (a second server on the
  // same port would silently share its connections: "in use" must be an
  // error) and it listens with a backlog of 5: a burst of connections beyond
  // that was reset without an answer (bench/soak.py saw it). SO_REUSEADDR
  // only, and the kernel's maximum backlog once bound (Start).
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  return transport;
}

absl::Status HttpTransport::Start(Answer answer) {
  const std::string flag = absl::StrCat("--", options_.listen_flag, "=", options_.listen);
  absl::StatusOr<HostPort> host_port = ParseHostPort(options_.listen, options_.listen_flag);
  if (!host_port.ok()) return host_port.status();
  std::string host = host_port->host.empty() ? "0.0.0.0" : host_port->host;
  httplib::Server& server = *server_;
  if (host_port->port == 0) {
    port_ = server.bind_to_any_port(host);
  } else {
    port_ = server.bind_to_port(host, host_port->port) ? host_port->port : -1;
  }
  int listen_fd = ListenSocketOf::Get(server).load();
  if (port_ <= 0 || listen_fd < 0) {
    return absl::UnavailableError(absl::StrCat(flag, ": cannot listen there (in use?)"));
  }
  if (::listen(listen_fd, SOMAXCONN) != 0) {
    return absl::UnavailableError(absl::StrCat(flag, ": listen: ", std::strerror(errno)));
  }

  // Connections whose head is in go to the workers; past the workers and
  // their queue, to the refuser (one thread, a queue as long: httplib reads
  // the head, already here, and the handlers answer 503); past that, the
  // accepting thread answers 503 itself.
  size_t threads = static_cast<size_t>(std::max(1, options_.threads));
  size_t pending = static_cast<size_t>(std::max(1, options_.max_pending_connections));
  workers_ = std::make_unique<ConnectionPool>(
      threads, pending, [&server](int sock) { ServeConnection(server, sock, false); });
  refuser_ = std::make_unique<ConnectionPool>(
      1, pending, [&server](int sock) { ServeConnection(server, sock, true); });
  Acceptor::Options acceptor;
  acceptor.listen_fd = listen_fd;
  acceptor.tls = !options_.tls_cert_file.empty();
  acceptor.max_waiting = std::max<size_t>(kMaxWaitingHeads, threads + pending);
  acceptor.write_timeout_s = options_.write_timeout_s;
  ConnectionPool* workers = workers_.get();
  ConnectionPool* refuser = refuser_.get();
  acceptor_ = std::make_unique<Acceptor>(
      acceptor,
      [workers, refuser](int sock) { return workers->TryEnqueue(sock) || refuser->TryEnqueue(sock); },
      answer != nullptr ? std::move(answer) : Answer(PlainAnswer));
  if (absl::Status started = acceptor_->Start(); !started.ok()) {
    return absl::UnavailableError(absl::StrCat(flag, ": ", started.message()));
  }
  return absl::OkStatus();
}

HttpTransport::~HttpTransport() { Stop(); }

void HttpTransport::Stop() {
  // As httplib's stop(): keep-alive loops end after their request, streams'
  // bodies end; then no more connections are accepted or dispatched.
  int listen_fd = server_ != nullptr ? ListenSocketOf::Get(*server_).exchange(INVALID_SOCKET)
                                     : INVALID_SOCKET;
  if (acceptor_ != nullptr) acceptor_->Stop();
  if (listen_fd != INVALID_SOCKET) {
    shutdown(listen_fd, SHUT_RDWR);
    close(listen_fd);
  }
  if (workers_ != nullptr) workers_->Shutdown();
  if (refuser_ != nullptr) refuser_->Shutdown();
}

}  // namespace streamgen
