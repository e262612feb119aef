#include "gateway/balancer.h"

#include <algorithm>
#include <boost/url/parse.hpp>

namespace fabrica::gateway {

Result<BackendAddress> BackendAddress::parse(const std::string& url) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) return fail(ErrorCode::kInvalidArgument, "not a URL: " + url, "backends");
  BackendAddress a;
  a.url = url;
  std::string scheme(parsed->scheme());
  if (scheme != "http" && scheme != "https") {
    return fail(ErrorCode::kInvalidArgument, "not an http(s) URL: " + url, "backends");
  }
  a.tls = scheme == "https";
  a.host = std::string(parsed->host_address());
  if (a.host.empty()) return fail(ErrorCode::kInvalidArgument, "no host: " + url, "backends");
  a.port = parsed->has_port() ? std::string(parsed->port()) : (a.tls ? "443" : "80");
  a.base_path = std::string(parsed->encoded_path());
  while (!a.base_path.empty() && a.base_path.back() == '/') a.base_path.pop_back();
  return a;
}

std::shared_ptr<Backend> Balancer::backend_for(const std::string& url) {
  auto it = backends_.find(url);
  if (it != backends_.end()) return it->second;
  auto address = BackendAddress::parse(url);
  if (!address) return nullptr;
  auto backend = std::make_shared<Backend>(std::move(*address));
  backends_.emplace(url, backend);
  return backend;
}

std::shared_ptr<Backend> Balancer::pick(const std::vector<std::string>& urls,
                                        const std::vector<const Backend*>& tried) {
  auto now = clock_.now();
  std::lock_guard lock(mutex_);
  std::shared_ptr<Backend> best, fallback;
  // Ties go round the list, so an idle endpoint still spreads its requests.
  size_t first = urls.empty() ? 0 : rotation_++ % urls.size();
  for (size_t i = 0; i < urls.size(); ++i) {
    auto b = backend_for(urls[(first + i) % urls.size()]);
    if (!b || std::find(tried.begin(), tried.end(), b.get()) != tried.end()) continue;
    bool ejected = b->ejected_until_ > now;
    auto& slot = ejected ? fallback : best;
    if (!slot || b->outstanding() < slot->outstanding()) slot = b;
  }
  return best ? best : fallback;
}

void Balancer::succeeded(Backend& backend) {
  std::lock_guard lock(mutex_);
  backend.consecutive_failures_ = 0;
  backend.ejected_until_ = {};
}

void Balancer::failed(Backend& backend) {
  auto now = clock_.now();
  std::lock_guard lock(mutex_);
  if (++backend.consecutive_failures_ >= options_.failures_to_eject) {
    backend.ejected_until_ = now + options_.cooldown;
  }
}

bool Balancer::healthy(const Backend& backend) {
  auto now = clock_.now();
  std::lock_guard lock(mutex_);
  return backend.ejected_until_ <= now;
}

std::vector<std::shared_ptr<Backend>> Balancer::all() {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<Backend>> out;
  for (const auto& [url, b] : backends_) out.push_back(b);
  return out;
}

}  // namespace fabrica::gateway
