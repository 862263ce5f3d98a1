#include "tools/server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

namespace tandem::server {

namespace {

thread_local Connection* current_connection = nullptr;

int make_eventfd() {
    const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
    return fd;
}

void write_eventfd(int fd) {
    const uint64_t one = 1;
    // EAGAIN only when the counter would overflow: it is readable already.
    [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
}

int ms_until(std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return int(std::clamp<int64_t>(left.count(), 0, 1 << 30));
}

// poll() that restarts after a signal.
int poll_fds(pollfd* fds, nfds_t n, int timeout_ms) {
    for (;;) {
        const int r = ::poll(fds, n, timeout_ms);
        if (r >= 0 || errno != EINTR) return r;
    }
}

std::pair<std::string, int> address(const sockaddr_storage& a) {
    char text[INET6_ADDRSTRLEN] = "";
    if (a.ss_family == AF_INET) {
        const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
        inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
        return {text, ntohs(v4.sin_port)};
    }
    if (a.ss_family == AF_INET6) {
        const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
        if (IN6_IS_ADDR_V4MAPPED(&v6.sin6_addr))  // one client, whichever family it came in by
            inet_ntop(AF_INET, &v6.sin6_addr.s6_addr[12], text, sizeof text);
        else
            inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
        return {text, ntohs(v6.sin6_port)};
    }
    return {"", -1};
}

// Answers a connection that is not admitted, without waiting for it: the response fits the
// socket buffer, and whatever the client sent is drained so that the close is a FIN, not a
// reset that could destroy the response before the client reads it.
void refuse(int fd, int status, const std::string& message) {
    const std::string body = "{\"error\":{\"message\":\"" + message + "\",\"type\":\"" +
                             (status == 429 ? "rate_limit_error" : "unavailable_error") +
                             "\",\"param\":null,\"code\":" + std::to_string(status) + "}}";
    const std::string response =
        "HTTP/1.1 " + std::to_string(status) +
        (status == 429 ? " Too Many Requests" : " Service Unavailable") +
        "\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    [[maybe_unused]] const ssize_t sent =
        ::send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
    char scratch[4096];
    while (::recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0) {
    }
}

// httplib's task queue: a thread per connection, started when no idle one is waiting, up to
// `max_threads`; beyond that connections wait for a thread. Threads stay for later bursts.
class ConnectionThreads final : public httplib::TaskQueue {
  public:
    explicit ConnectionThreads(size_t max_threads) : max_threads_(max_threads) {}

    void enqueue(std::function<void()> fn) override {
        std::lock_guard lock(mutex_);
        jobs_.push_back(std::move(fn));
        if (idle_ < jobs_.size() && threads_.size() < max_threads_)
            threads_.emplace_back([this] { work(); });
        else
            ready_.notify_one();
    }

    void shutdown() override {
        {
            std::lock_guard lock(mutex_);
            shutdown_ = true;
        }
        ready_.notify_all();
        // enqueue() is only called by the accepting thread, which is the one calling this.
        for (std::thread& t : threads_)
            t.join();
    }

  private:
    void work() {
        std::unique_lock lock(mutex_);
        for (;;) {
            ++idle_;
            ready_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
            --idle_;
            if (jobs_.empty()) return;  // shutdown
            std::function<void()> fn = std::move(jobs_.front());
            jobs_.pop_front();
            lock.unlock();
            fn();
            lock.lock();
        }
    }

    const size_t max_threads_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::function<void()>> jobs_;
    std::vector<std::thread> threads_;
    size_t idle_ = 0;
    bool shutdown_ = false;
};

}  // namespace

Latch::Latch() : fd_(make_eventfd()) {}
Latch::~Latch() {
    ::close(fd_);
}
void Latch::set() {
    if (!set_.exchange(true)) write_eventfd(fd_);
}

Wakeup::Wakeup() : fd_(make_eventfd()) {}
Wakeup::~Wakeup() {
    ::close(fd_);
}
void Wakeup::signal() {
    write_eventfd(fd_);
}
void Wakeup::clear() {
    uint64_t value;
    [[maybe_unused]] const ssize_t n = ::read(fd_, &value, sizeof value);
}

// --- Connection -------------------------------------------------------------------------------

Connection::Connection(int fd, const HttpServer& server, std::string peer_ip, int peer_port)
    : fd_(fd), server_(server), peer_ip_(std::move(peer_ip)), peer_port_(peer_port) {}

bool Connection::wait_io(short events, Clock::time_point deadline) const {
    // A request still being read before its handler runs is not in flight: shutdown ends it.
    const int stop_fd = handling_ ? server_.cut_fd() : server_.stopping_fd();
    for (;;) {
        pollfd fds[3] = {{fd_, events, 0}, {server_.cut_fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
        const int r = poll_fds(fds, 3, ms_until(deadline));
        if (r <= 0 || fds[1].revents || fds[2].revents) return false;
        if (fds[0].revents) return true;  // ready, or an error the next call reports
    }
}

bool Connection::is_readable() const {
    return buffer_begin_ < buffer_end_ || wait_io(POLLIN, read_deadline_);
}

bool Connection::is_writable() const {
    return !client_gone();
}

ssize_t Connection::read(char* ptr, size_t size) {
    if (buffer_begin_ == buffer_end_) {
        // A failed read leaves the request half read: whatever httplib answers, the connection
        // cannot carry another one.
        if (!wait_io(POLLIN, read_deadline_)) {
            close_after_response_ = true;
            return -1;
        }
        const ssize_t n = ::recv(fd_, buffer_, sizeof buffer_, 0);
        if (n <= 0) {
            close_after_response_ = true;
            return n;
        }
        buffer_begin_ = 0;
        buffer_end_ = size_t(n);
    }
    const size_t n = std::min(size, buffer_end_ - buffer_begin_);
    std::memcpy(ptr, buffer_ + buffer_begin_, n);
    buffer_begin_ += n;
    return ssize_t(n);
}

ssize_t Connection::write(const char* ptr, size_t size) {
    for (;;) {
        const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        if (!wait_io(POLLOUT, Clock::now() + server_.limits().write_timeout)) return -1;
    }
}

void Connection::get_remote_ip_and_port(std::string& ip, int& port) const {
    ip = peer_ip_;
    port = peer_port_;
}

void Connection::get_local_ip_and_port(std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        std::tie(ip, port) = address(a);
}

bool Connection::client_gone() const {
    // POLLRDHUP: the client closed (or shut down) its side; data it pipelined does not count.
    pollfd fd{fd_, POLLRDHUP, 0};
    return poll_fds(&fd, 1, 0) != 0;
}

Connection::Event Connection::wait(const Wakeup& wake, int timeout_ms) const {
    pollfd fds[3] = {{wake.fd(), POLLIN, 0}, {fd_, POLLRDHUP, 0}, {server_.cancel_fd(), POLLIN, 0}};
    if (poll_fds(fds, 3, timeout_ms) < 0) return Event::ClientGone;
    if (fds[2].revents) return Event::Cancelled;
    if (fds[1].revents) return Event::ClientGone;
    return Event::Woken;
}

bool Connection::wait_for_request() {
    if (buffer_begin_ < buffer_end_) return !server_.stopping();
    pollfd fds[2] = {{fd_, POLLIN, 0}, {server_.stopping_fd(), POLLIN, 0}};
    const int r = poll_fds(fds, 2, ms_until(Clock::now() + server_.limits().idle_timeout));
    return r > 0 && !fds[1].revents && fds[0].revents;
}

void Connection::start_request() {
    read_deadline_ = Clock::now() + server_.limits().request_timeout;
    handling_ = false;
}

// --- HttpServer -------------------------------------------------------------------------------

HttpServer::HttpServer(HttpLimits limits) : limits_(limits) {
    // Headroom over the connection cap: threads that answer refused connections at once.
    const size_t threads = size_t(std::max(limits_.max_connections, 1)) + 32;
    new_task_queue = [threads] { return new ConnectionThreads(threads); };
    set_keep_alive_timeout(limits_.idle_timeout.count());  // what the Keep-Alive header says
    set_keep_alive_max_count(1000000);
}

HttpServer::~HttpServer() = default;

int HttpServer::bind(const std::string& host, int port) {
    const int bound = port == 0 ? bind_to_any_port(host) : (bind_to_port(host, port) ? port : -1);
    if (bound < 0)
        throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port));
    // httplib listened with a backlog of 5: a burst of connections overflows that before the
    // accepting thread runs, and the kernel drops them (clients retry after a second or fail).
    if (::listen(svr_sock_, limits_.listen_backlog) != 0)
        throw std::system_error(errno, std::generic_category(), "listen");
    return bound;
}

void HttpServer::serve() {
    listen_after_bind();
}

void HttpServer::stop_accepting() {
    if (stopping_.is_set()) return;
    stopping_.set();
    // accept() fails with EINVAL once the listener is shut down: httplib's loop then closes it
    // and waits for its connections. httplib's own stop() would also end open streams.
    ::shutdown(svr_sock_, SHUT_RDWR);
}

bool HttpServer::wait_idle(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return idle_.wait_until(lock, deadline, [&] { return busy_ == 0; });
}

void HttpServer::cancel_requests() {
    cancelled_.set();
}

void HttpServer::cut_connections() {
    cut_.set();
}

Connection* HttpServer::current() {
    return current_connection;
}

std::pair<int, std::string> HttpServer::admit(const std::string& peer_ip) {
    std::lock_guard lock(mutex_);
    if (open_ >= limits_.max_connections) {
        ++refused_full_;
        return {503, "the server has " + std::to_string(limits_.max_connections) +
                         " connections open, its limit; try again later"};
    }
    int64_t& mine = per_client_[peer_ip];
    if (limits_.max_client_connections > 0 && mine >= limits_.max_client_connections) {
        ++refused_client_;
        return {429, "this client has " + std::to_string(limits_.max_client_connections) +
                         " connections open, the limit per client; reuse them or close some"};
    }
    ++mine;
    ++open_;
    return {0, ""};
}

void HttpServer::release(const std::string& peer_ip) {
    std::lock_guard lock(mutex_);
    --open_;
    if (--per_client_[peer_ip] == 0) per_client_.erase(peer_ip);
}

bool HttpServer::process_and_close_socket(socket_t sock) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    getpeername(sock, reinterpret_cast<sockaddr*>(&peer), &len);
    const auto [ip, port] = address(peer);
    if (const auto [status, why] = admit(ip); status != 0) {
        refuse(sock, status, why);
        ::close(sock);
        return false;
    }
    // Server-sent events are many small writes: without TCP_NODELAY each waits for the ACK of
    // the one before, which a client may delay by 40 ms (so does a body after its headers).
    const int on = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    Connection connection(sock, *this, ip, port);
    current_connection = &connection;
    bool ok = true;
    while (ok && connection.wait_for_request()) {
        connection.start_request();
        {
            std::lock_guard lock(mutex_);
            ++busy_;
        }
        bool client_closes = false;
        ok = process_request(connection, stopping_.is_set(), client_closes, nullptr);
        {
            std::lock_guard lock(mutex_);
            --busy_;
        }
        idle_.notify_all();
        if (client_closes || connection.must_close() || stopping_.is_set()) break;
    }
    current_connection = nullptr;
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    release(ip);
    return ok;
}

void HttpServer::render_metrics(std::string& out) const {
    std::lock_guard lock(mutex_);
    out +=
        "# HELP tandem_http_connections_open Client connections open.\n"
        "# TYPE tandem_http_connections_open gauge\n"
        "tandem_http_connections_open " +
        std::to_string(open_) +
        "\n"
        "# HELP tandem_http_connections_refused_total Connections answered at once and closed: "
        "the server at max_connections, or the client at max_client_connections.\n"
        "# TYPE tandem_http_connections_refused_total counter\n"
        "tandem_http_connections_refused_total{reason=\"server_full\"} " +
        std::to_string(refused_full_) +
        "\n"
        "tandem_http_connections_refused_total{reason=\"client_limit\"} " +
        std::to_string(refused_client_) + "\n";
}

}  // namespace tandem::server
