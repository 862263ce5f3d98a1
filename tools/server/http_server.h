// HttpServer: cpp-httplib's Server with the connection handling a public server needs, which
// Debian's cpp-httplib 0.11.4 does not have (its listen backlog is compiled in as 5, a
// connection holds a thread from a fixed pool for as long as the client likes, and a stop cuts
// open streams without their last chunk).
//
// What changes, everything else (parsing, routing, chunked writing) being httplib's own:
// - the listen backlog is raised after bind (Linux takes a second listen() on the socket);
// - every connection gets a thread of its own, started on demand up to max_connections; beyond
//   that cap, or beyond max_client_connections from one remote address, a new connection is
//   answered at once (503, or 429 for one client) and closed, so idle, slow or half-open
//   connections cannot take the threads that everyone else needs;
// - a request has request_timeout from its first byte to its last (headers and body), however
//   slowly it trickles; an idle keep-alive connection closes after idle_timeout; a write that
//   cannot progress for write_timeout fails;
// - handlers can tell when their client hung up (Connection::wait) and abort its work;
// - shutdown in phases: stop_accepting() closes the listener and the idle connections and lets
//   requests in progress run on; cancel_requests() tells the handlers still waiting to end
//   their responses now; cut_connections() fails every read and write still blocked.
// Non-goals: TLS, HTTP/2, connection fairness between distinct remote addresses.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace tandem::server {

struct HttpLimits {
    int listen_backlog = 4096;                 // the kernel caps it at net.core.somaxconn
    int max_connections = 1024;                // open connections, each with its thread
    int max_client_connections = 256;          // per remote address; 0: no cap
    std::chrono::seconds request_timeout{30};  // a request's first byte to its last
    std::chrono::seconds idle_timeout{10};     // keep-alive connections without a request
    std::chrono::seconds write_timeout{30};    // a write that cannot progress for this long fails
};

// A flag that is set once and can be waited for with poll() (an eventfd).
class Latch {
  public:
    Latch();
    ~Latch();
    Latch(const Latch&) = delete;
    Latch& operator=(const Latch&) = delete;
    void set();
    bool is_set() const { return set_.load(); }
    int fd() const { return fd_; }

  private:
    int fd_;
    std::atomic<bool> set_{false};
};

// A counter-style wake-up that can be waited for with poll() (an eventfd): signal() from any
// thread, clear() by the one waiting before it looks at what changed.
class Wakeup {
  public:
    Wakeup();
    ~Wakeup();
    Wakeup(const Wakeup&) = delete;
    Wakeup& operator=(const Wakeup&) = delete;
    void signal();
    void clear();
    int fd() const { return fd_; }

  private:
    int fd_;
};

class HttpServer;

// One client connection: httplib reads requests from it and writes responses to it.
class Connection final : public httplib::Stream {
  public:
    Connection(int fd, const HttpServer& server, std::string peer_ip, int peer_port);

    bool is_readable() const override;
    bool is_writable() const override;
    ssize_t read(char* ptr, size_t size) override;
    ssize_t write(const char* ptr, size_t size) override;
    void get_remote_ip_and_port(std::string& ip, int& port) const override;
    void get_local_ip_and_port(std::string& ip, int& port) const override;
    int socket() const override { return fd_; }

    // For handlers. Blocks until `wake` is signalled (or `timeout_ms` passed: Woken too), the
    // client hangs up (or resets), or the server cancels the requests in progress (shutdown
    // after its timeout).
    enum class Event { Woken, ClientGone, Cancelled };
    Event wait(const Wakeup& wake, int timeout_ms = -1) const;
    bool client_gone() const;
    // The connection closes once the current response is written (a body left unread, say).
    void close_after_response() { close_after_response_ = true; }
    // The request reached its handler: from now on it is in flight and a shutdown lets it
    // finish (up to its timeout); before, a shutdown stops reading it at once.
    void mark_handling() { handling_ = true; }

    // For the connection loop.
    bool wait_for_request();  // false: idle timeout, hang-up or shutdown
    void start_request();     // the request's reading deadline starts now
    bool must_close() const { return close_after_response_; }

  private:
    using Clock = std::chrono::steady_clock;
    // Waits until the socket has `events` (or an error), up to `deadline`; false on timeout or
    // when the server cuts its connections.
    bool wait_io(short events, Clock::time_point deadline) const;

    int fd_;
    const HttpServer& server_;
    std::string peer_ip_;
    int peer_port_;
    Clock::time_point read_deadline_;
    bool close_after_response_ = false;
    bool handling_ = false;
    char buffer_[16384];
    size_t buffer_begin_ = 0, buffer_end_ = 0;
};

class HttpServer : public httplib::Server {
  public:
    explicit HttpServer(HttpLimits limits);
    ~HttpServer() override;

    // Binds and listens with the full backlog; returns the port (port 0: any free one).
    // Throws when it cannot.
    int bind(const std::string& host, int port);
    // Accepts and serves until stop_accepting(); returns once every connection has closed.
    void serve();

    void stop_accepting();
    // Waits until no request is in progress (being read, handled or written), up to `deadline`.
    bool wait_idle(std::chrono::steady_clock::time_point deadline);
    void cancel_requests();
    void cut_connections();
    bool stopping() const { return stopping_.is_set(); }

    // The connection the calling thread serves; null outside a request.
    static Connection* current();

    // Prometheus lines: open connections, refused connections by reason.
    void render_metrics(std::string& out) const;

    const HttpLimits& limits() const { return limits_; }
    int stopping_fd() const { return stopping_.fd(); }
    int cancel_fd() const { return cancelled_.fd(); }
    int cut_fd() const { return cut_.fd(); }

  private:
    bool process_and_close_socket(socket_t sock) override;
    // Admission of a new connection: {0, ""} if admitted, else the status and why not.
    std::pair<int, std::string> admit(const std::string& peer_ip);
    void release(const std::string& peer_ip);

    HttpLimits limits_;
    Latch stopping_, cancelled_, cut_;
    mutable std::mutex mutex_;
    std::condition_variable idle_;
    int64_t open_ = 0, busy_ = 0;
    std::map<std::string, int64_t> per_client_;
    uint64_t refused_full_ = 0, refused_client_ = 0;
};

}  // namespace tandem::server
