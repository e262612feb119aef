#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "core/error.h"

namespace boost::asio::ssl {
class context;
}
struct ssl_st;

namespace fabrica::crypto {

// TLS for every link Fabrica makes (fabricad's API, the gateway's listener, agents, gateways
// and the CLI as clients): TLS 1.2 at least, 1.3 preferred, OpenSSL's default cipher choice.

// A server's certificate chain and key, from PEM files, reloaded without a restart: current()
// looks at the files' modification times at most once per `check_every` and builds a new
// context when they changed. A pair that does not load keeps the previous context (and is
// reported by last_error()). Thread-safe.
class TlsServerContext {
 public:
  // kInvalidArgument (field "tls_cert" or "tls_key") when the files do not load or match.
  static Result<std::shared_ptr<TlsServerContext>> load(
      std::string cert_file, std::string key_file,
      std::chrono::milliseconds check_every = std::chrono::seconds(1));

  // The context new connections use; each connection keeps its own reference.
  std::shared_ptr<boost::asio::ssl::context> current();
  std::string last_error();

 private:
  TlsServerContext(std::string cert_file, std::string key_file, std::chrono::milliseconds every)
      : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)), every_(every) {}
  Result<std::shared_ptr<boost::asio::ssl::context>> build() const;
  std::string stamp() const;  // The files' sizes and modification times.

  std::string cert_file_;
  std::string key_file_;
  std::chrono::milliseconds every_;
  std::mutex mutex_;
  std::shared_ptr<boost::asio::ssl::context> context_;
  std::string stamp_;
  std::chrono::steady_clock::time_point checked_;
  std::string last_error_;
};

// How a client trusts a server.
struct TlsClientOptions {
  // PEM certificates to trust; empty: the system's trust store.
  std::string ca_file;
  // When set (64 hex digits): trust whatever CA in the chain the server sends has this
  // SHA-256 of its SubjectPublicKeyInfo, as a join token carries it (kubeadm's discovery
  // hash); the chain must still verify up to that CA and name the host.
  std::string pin_sha256;
};

// A client context for `options`: peer verification on, TLS 1.2 minimum.
Result<std::shared_ptr<boost::asio::ssl::context>> make_client_context(
    const TlsClientOptions& options);

// Before a handshake: SNI and the host name the certificate must carry (DNS name or IP).
Result<void> prepare_client(ssl_st* ssl, const std::string& host, const TlsClientOptions& options);

// After a handshake with a pin: kUnavailable unless the peer's chain holds the pinned CA and
// verifies up to it for `host`. On success, the pinned CA certificate as PEM (to be saved
// and trusted from then on).
Result<std::string> check_pinned_chain(ssl_st* ssl, const std::string& host,
                                       std::string_view pin_sha256);

// The SHA-256 (hex) of the SubjectPublicKeyInfo of the first certificate in a PEM file.
Result<std::string> spki_sha256_of_file(const std::string& pem_file);

}  // namespace fabrica::crypto
