#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace fabrica::client {
class HttpClient;
}

namespace fabrica::market {

// "hf://ORG/NAME[@REVISION]": a Hugging Face model repository and a branch, tag or commit
// (default "main").
struct HubRef {
  std::string repo;
  std::string revision = "main";
  std::string uri() const { return "hf://" + repo + "@" + revision; }
};
// kInvalidArgument naming `source` unless the URI has that shape (repo names: letters,
// digits, '-', '_', '.'; no "..").
Result<HubRef> parse_hub_uri(std::string_view uri);

// One file of a repository at a commit, as the Hub's tree lists it.
struct HubFile {
  std::string path;  // Relative, '/'-separated; checked safe (no "..", no absolute path).
  int64_t size = 0;
  std::string git_oid;  // The git blob SHA-1 (40 hex).
  std::string sha256;   // LFS files: the content's SHA-256 (64 hex); empty for small files.
};

struct HubOptions {
  std::string endpoint = "https://huggingface.co";  // Like HF_ENDPOINT: a mirror works.
  std::string token;                                // Sent as a Bearer to `endpoint` only.
  std::chrono::milliseconds timeout{30000};         // Per read or write.
};

// A client of the Hugging Face Hub's HTTP API (or a mirror of it) for one repository
// import: revision → commit, the tree at the commit (paginated), and files with Range.
// The Hub's refusals become clear errors:
//   gated repository: kPermissionDenied naming `token`, saying where to accept the licence;
//   a token refused or lacking access: kInvalidArgument / kPermissionDenied naming `token`;
//   a missing (or private, without a token) repository or revision: kNotFound naming `source`;
//   429: kResourceExhausted with the Retry-After seconds;
//   an unreachable Hub, a cut connection, a 5xx: kUnavailable (retry).
// Not thread-safe: one Hub per thread.
class Hub {
 public:
  static Result<std::unique_ptr<Hub>> create(HubOptions options);
  ~Hub();

  // The commit (40 hex) `ref.revision` names now.
  Result<std::string> resolve(const HubRef& ref);
  // Every file of `repo` at `commit`, following the tree's `Link: rel="next"` pages.
  Result<std::vector<HubFile>> tree(const std::string& repo, const std::string& commit);
  // File `path` of `repo` at `commit` from byte `offset`, following redirects (a CDN); each
  // piece goes to `sink` (false stops: kAborted). When the server sends the whole file
  // although `offset` > 0 (it ignored Range), `restart()` is called first and the data
  // starts at byte 0.
  Result<void> download(const std::string& repo, const std::string& commit, const std::string& path,
                        int64_t offset, const std::function<bool(std::string_view)>& sink,
                        const std::function<void()>& restart);

  const std::string& endpoint() const { return options_.endpoint; }

 private:
  explicit Hub(HubOptions options);
  // A client for "scheme://host:port" (kept, one per origin).
  Result<client::HttpClient*> client_for(const std::string& origin);
  // GET of a JSON document at an absolute URL or an endpoint path; errors as the class says.
  struct Answer {
    int status = 0;
    std::string body;
    std::map<std::string, std::string> headers;
  };
  Result<Answer> get(const std::string& url, const std::string& what, const std::string& repo);
  Error refusal(int status, const std::map<std::string, std::string>& headers,
                const std::string& body, const std::string& repo, const std::string& what) const;

  HubOptions options_;
  std::string origin_;  // The endpoint's scheme://host:port.
  std::map<std::string, std::unique_ptr<client::HttpClient>> clients_;
};

}  // namespace fabrica::market
