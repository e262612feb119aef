#include "market/hub.h"

#include <boost/url/parse.hpp>

#include "client/http_client.h"
#include "core/json.h"

namespace fabrica::market {
namespace {

constexpr int kMaxRedirects = 5;
constexpr size_t kMaxTreePages = 1000;

bool repo_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

bool is_hex(std::string_view s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

// A path from the Hub, safe to create under a directory of ours.
bool safe_path(std::string_view path) {
  if (path.empty() || path.size() > 1024 || path.front() == '/' || path.back() == '/') {
    return false;
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view segment = path.substr(start, end - start);
    if (segment.empty() || segment == "." || segment == "..") return false;
    start = end + 1;
  }
  return std::none_of(path.begin(), path.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// Each '/'-separated segment percent-encoded.
std::string encode_path(std::string_view path) {
  std::string out;
  size_t start = 0;
  while (true) {
    size_t end = path.find('/', start);
    out += client::url_encode(path.substr(start, end - start));
    if (end == std::string_view::npos) break;
    out += '/';
    start = end + 1;
  }
  return out;
}

struct SplitUrl {
  std::string origin;  // scheme://host:port
  std::string target;  // /path?query
};

Result<SplitUrl> split_url(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed || (parsed->scheme() != "http" && parsed->scheme() != "https") ||
      parsed->encoded_host().empty()) {
    return fail(ErrorCode::kUnavailable,
                "the Hub sent a URL that is not http(s): " + std::string(url.substr(0, 200)));
  }
  std::string port(parsed->port());
  if (port.empty()) port = parsed->scheme() == "https" ? "443" : "80";
  SplitUrl out{.origin = std::string(parsed->scheme()) + "://" +
                         std::string(parsed->encoded_host_and_port().substr(
                             0, parsed->encoded_host().size())) +
                         ":" + port,
               .target = std::string(parsed->encoded_path())};
  if (out.target.empty()) out.target = "/";
  if (parsed->has_query()) out.target += "?" + std::string(parsed->encoded_query());
  return out;
}

// The URL of the Link header's rel="next", or "".
std::string next_link(const std::string& link) {
  size_t at = 0;
  while ((at = link.find('<', at)) != std::string::npos) {
    size_t close = link.find('>', at);
    if (close == std::string::npos) return "";
    size_t end = link.find(',', close);
    std::string params = link.substr(close + 1, end == std::string::npos ? end : end - close - 1);
    if (params.find("rel=\"next\"") != std::string::npos ||
        params.find("rel=next") != std::string::npos) {
      return link.substr(at + 1, close - at - 1);
    }
    at = close;
  }
  return "";
}

std::string header_of(const std::map<std::string, std::string>& headers, const std::string& name) {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

}  // namespace

Result<HubRef> parse_hub_uri(std::string_view uri) {
  auto bad = [&](const std::string& why) {
    return fail(ErrorCode::kInvalidArgument, why + ": \"hf://ORG/NAME[@REVISION]\"", "source");
  };
  constexpr std::string_view kScheme = "hf://";
  if (!uri.starts_with(kScheme)) return bad("must be a Hugging Face URI");
  uri.remove_prefix(kScheme.size());
  HubRef ref;
  size_t at = uri.find('@');
  ref.repo = std::string(uri.substr(0, at));
  if (at != std::string_view::npos) ref.revision = std::string(uri.substr(at + 1));
  size_t slash = ref.repo.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == ref.repo.size() ||
      ref.repo.find('/', slash + 1) != std::string::npos || ref.repo.size() > 200) {
    return bad("must name ORG/NAME");
  }
  for (char c : ref.repo) {
    if (c != '/' && !repo_char(c)) return bad("has a character a repository name cannot have");
  }
  if (ref.repo.find("..") != std::string::npos) return bad("must not contain \"..\"");
  if (ref.revision.empty() || ref.revision.size() > 200 ||
      std::any_of(ref.revision.begin(), ref.revision.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    return bad("has an empty or unprintable revision");
  }
  return ref;
}

Hub::Hub(HubOptions options) : options_(std::move(options)) {}
Hub::~Hub() = default;

Result<std::unique_ptr<Hub>> Hub::create(HubOptions options) {
  while (!options.endpoint.empty() && options.endpoint.back() == '/') options.endpoint.pop_back();
  auto split = split_url(options.endpoint + "/");
  if (!split || split->target != "/") {
    return fail(ErrorCode::kInvalidArgument,
                "must be an http(s) URL without a path, like https://huggingface.co", "url");
  }
  std::unique_ptr<Hub> hub(new Hub(std::move(options)));
  hub->origin_ = split->origin;
  FAB_TRY(hub->client_for(hub->origin_));
  return hub;
}

Result<client::HttpClient*> Hub::client_for(const std::string& origin) {
  auto it = clients_.find(origin);
  if (it != clients_.end()) return it->second.get();
  auto made = client::HttpClient::create(origin);
  if (!made)
    return fail(ErrorCode::kUnavailable, "cannot use " + origin + ": " + made.error().message());
  (*made)->set_timeout(options_.timeout);
  client::HttpClient* raw = made->get();
  clients_[origin] = std::move(*made);
  return raw;
}

Error Hub::refusal(int status, const std::map<std::string, std::string>& headers,
                   const std::string& body, const std::string& repo,
                   const std::string& what) const {
  std::string code = header_of(headers, "x-error-code");
  std::string message = header_of(headers, "x-error-message");
  if (message.empty()) {
    auto parsed = parse_json(body);
    if (parsed && parsed->is_object() && (*parsed)["error"].is_string()) {
      message = (*parsed)["error"].get<std::string>();
    }
  }
  std::string page = options_.endpoint + "/" + repo;
  bool has_token = !options_.token.empty();
  if (code == "GatedRepo") {
    return Error(ErrorCode::kPermissionDenied,
                 has_token ? "repository " + repo +
                                 " is gated and this token's account may not read it yet: "
                                 "accept the licence at " +
                                 page + " with that account"
                           : "repository " + repo + " is gated: accept the licence at " + page +
                                 " and give a token of that account (--token)",
                 "token");
  }
  if (status == 401 && message.find("Invalid credentials") != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument, "the Hub refused the token: it is invalid or expired",
                 "token");
  }
  if (status == 403) {
    return Error(ErrorCode::kPermissionDenied,
                 "the token lacks access to " + repo + (message.empty() ? "" : ": " + message),
                 "token");
  }
  if (code == "RevisionNotFound") {
    return Error(ErrorCode::kNotFound,
                 "no such revision in " + repo + (message.empty() ? "" : ": " + message), "source");
  }
  if (code == "EntryNotFound") {
    return Error(ErrorCode::kNotFound, what + " is not in " + repo, "source");
  }
  if (status == 401 || status == 404) {
    return Error(ErrorCode::kNotFound,
                 "repository " + repo + " not found" +
                     (has_token ? "" : ", or private: give a token that can read it (--token)"),
                 "source");
  }
  if (status == 429) {
    std::string retry = header_of(headers, "retry-after");
    int seconds = retry.empty() ? 1 : std::max(1, std::atoi(retry.c_str()));
    return Error(ErrorCode::kResourceExhausted, "the Hub is rate-limiting " + what)
        .with_retry_after(seconds);
  }
  return Error(ErrorCode::kUnavailable, "the Hub answered HTTP " + std::to_string(status) +
                                            " for " + what +
                                            (message.empty() ? "" : ": " + message));
}

Result<Hub::Answer> Hub::get(const std::string& url, const std::string& what,
                             const std::string& repo) {
  FAB_ASSIGN_OR_RETURN(SplitUrl split, split_url(url.starts_with("/") ? origin_ + url : url));
  FAB_ASSIGN_OR_RETURN(client::HttpClient * http, client_for(split.origin));
  client::Headers headers{{"Accept", "application/json"}};
  if (!options_.token.empty() && split.origin == origin_) {
    headers.emplace_back("Authorization", "Bearer " + options_.token);
  }
  FAB_ASSIGN_OR_RETURN(auto response, http->request("GET", split.target, {}, headers));
  if (response.status != 200) {
    return fail(refusal(response.status, response.headers, response.body, repo, what));
  }
  return Answer{response.status, std::move(response.body), std::move(response.headers)};
}

Result<std::string> Hub::resolve(const HubRef& ref) {
  std::string url = "/api/models/" + ref.repo + "/revision/" + client::url_encode(ref.revision);
  FAB_ASSIGN_OR_RETURN(Answer answer, get(url, "revision " + ref.revision, ref.repo));
  auto body = parse_json(answer.body);
  if (!body || !body->is_object() || !(*body)["sha"].is_string() ||
      !is_hex((*body)["sha"].get<std::string>(), 40)) {
    return fail(ErrorCode::kUnavailable, "the Hub's answer for " + ref.uri() + " has no commit");
  }
  return (*body)["sha"].get<std::string>();
}

Result<std::vector<HubFile>> Hub::tree(const std::string& repo, const std::string& commit) {
  std::vector<HubFile> files;
  std::string url = "/api/models/" + repo + "/tree/" + commit + "?recursive=true";
  for (size_t page = 0; !url.empty(); ++page) {
    if (page == kMaxTreePages) {
      return fail(ErrorCode::kFailedPrecondition,
                  "the tree of " + repo + " has over " + std::to_string(kMaxTreePages) + " pages");
    }
    FAB_ASSIGN_OR_RETURN(Answer answer, get(url, "the file list of " + repo, repo));
    auto body = parse_json(answer.body);
    if (!body || !body->is_array()) {
      return fail(ErrorCode::kUnavailable, "the Hub's file list of " + repo + " is not a list");
    }
    for (const Json& entry : *body) {
      if (!entry.is_object() || entry.value("type", "") != "file") continue;
      HubFile f;
      try {
        f.path = entry.at("path").get<std::string>();
        f.size = entry.at("size").get<int64_t>();
        f.git_oid = entry.at("oid").get<std::string>();
        if (entry.contains("lfs") && entry["lfs"].is_object()) {
          f.sha256 = entry["lfs"].at("oid").get<std::string>();
          f.size = entry["lfs"].value("size", f.size);
        }
      } catch (const std::exception&) {
        return fail(ErrorCode::kUnavailable, "the Hub's file list of " + repo + " is malformed");
      }
      if (!safe_path(f.path) || f.size < 0 || f.size > (int64_t{1} << 50) ||
          !is_hex(f.git_oid, 40) || (!f.sha256.empty() && !is_hex(f.sha256, 64))) {
        return fail(ErrorCode::kUnavailable, "the Hub lists a file Fabrica will not write: \"" +
                                                 f.path.substr(0, 200) + "\"");
      }
      files.push_back(std::move(f));
    }
    url = next_link(header_of(answer.headers, "link"));
  }
  return files;
}

Result<void> Hub::download(const std::string& repo, const std::string& commit,
                           const std::string& path, int64_t offset,
                           const std::function<bool(std::string_view)>& sink,
                           const std::function<void()>& restart) {
  std::string url = origin_ + "/" + repo + "/resolve/" + commit + "/" + encode_path(path);
  for (int hop = 0; hop <= kMaxRedirects; ++hop) {
    FAB_ASSIGN_OR_RETURN(SplitUrl split, split_url(url));
    FAB_ASSIGN_OR_RETURN(client::HttpClient * http, client_for(split.origin));
    client::Headers headers{{"Accept-Encoding", "identity"}};
    if (offset > 0) headers.emplace_back("Range", "bytes=" + std::to_string(offset) + "-");
    // The token goes to the Hub only, never to a CDN it redirects to.
    if (!options_.token.empty() && split.origin == origin_) {
      headers.emplace_back("Authorization", "Bearer " + options_.token);
    }
    FAB_ASSIGN_OR_RETURN(auto response,
                         http->fetch("GET", split.target, headers,
                                     [&, first = true](const client::ClientResponse& head,
                                                       std::string_view data) mutable {
                                       if (first) {
                                         first = false;
                                         // A 200 to a Range request: the server sends the whole
                                         // file.
                                         if (offset > 0 && head.status == 200) restart();
                                       }
                                       return sink(data);
                                     }));
    int status = response.status;
    if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
      std::string location = response.header("location");
      if (location.empty()) return fail(ErrorCode::kUnavailable, "the Hub redirected nowhere");
      url = location.starts_with("/") ? split.origin + location : location;
      continue;
    }
    if (status == 416 && offset > 0) {
      restart();  // What we hold is longer than the file: start again.
      offset = 0;
      continue;
    }
    if (status < 200 || status >= 300) {
      return fail(refusal(status, response.headers, response.body, repo, path));
    }
    return {};
  }
  return fail(ErrorCode::kUnavailable, "the Hub redirected " + path + " too many times");
}

}  // namespace fabrica::market
