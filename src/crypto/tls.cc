#include "crypto/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <boost/asio/ssl/context.hpp>

#include "crypto/crypto.h"

namespace fabrica::crypto {
namespace ssl = boost::asio::ssl;
namespace {

std::string openssl_error() {
  unsigned long code = ERR_get_error();
  if (code == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  ERR_clear_error();
  return text;
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Names the host a certificate must carry, on verification parameters.
bool expect_host(X509_VERIFY_PARAM* param, const std::string& host) {
  if (is_ip(host)) return X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1;
  return X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) == 1;
}

std::string spki_sha256(X509* cert) {
  unsigned char* der = nullptr;
  int length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (length <= 0) return "";
  std::string hex = sha256_hex(std::string_view(reinterpret_cast<char*>(der), length));
  OPENSSL_free(der);
  return hex;
}

void secure_defaults(ssl::context& ctx) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  SSL_CTX_set_options(ctx.native_handle(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
}

}  // namespace

Result<std::shared_ptr<TlsServerContext>> TlsServerContext::load(std::string cert_file,
                                                                 std::string key_file,
                                                                 std::chrono::milliseconds every) {
  std::shared_ptr<TlsServerContext> out(
      new TlsServerContext(std::move(cert_file), std::move(key_file), every));
  out->stamp_ = out->stamp();
  FAB_ASSIGN_OR_RETURN(out->context_, out->build());
  out->checked_ = std::chrono::steady_clock::now();
  return out;
}

std::string TlsServerContext::stamp() const {
  std::string out;
  for (const std::string* file : {&cert_file_, &key_file_}) {
    struct stat st {};
    if (::stat(file->c_str(), &st) != 0) return "";
    out += std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec) + ";";
  }
  return out;
}

Result<std::shared_ptr<ssl::context>> TlsServerContext::build() const {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  secure_defaults(*ctx);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert_file_, ec);
  if (ec) {
    return fail(ErrorCode::kInvalidArgument,
                "cannot load the certificate chain " + cert_file_ + ": " + ec.message(),
                "tls_cert");
  }
  ctx->use_private_key_file(key_file_, ssl::context::pem, ec);
  if (ec) {
    return fail(ErrorCode::kInvalidArgument,
                "cannot load the private key " + key_file_ + ": " + ec.message(), "tls_key");
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return fail(ErrorCode::kInvalidArgument,
                key_file_ + " is not the key of the certificate in " + cert_file_, "tls_key");
  }
  return ctx;
}

std::shared_ptr<ssl::context> TlsServerContext::current() {
  std::lock_guard lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  if (now - checked_ < every_) return context_;
  checked_ = now;
  std::string seen = stamp();
  if (seen.empty() || seen == stamp_) return context_;
  auto rebuilt = build();
  stamp_ = seen;  // A bad pair is tried once, not on every connection.
  if (!rebuilt) {
    last_error_ = rebuilt.error().message();
    return context_;
  }
  last_error_.clear();
  context_ = std::move(*rebuilt);
  return context_;
}

std::string TlsServerContext::last_error() {
  std::lock_guard lock(mutex_);
  return last_error_;
}

Result<std::shared_ptr<ssl::context>> make_client_context(const TlsClientOptions& options) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  secure_defaults(*ctx);
  boost::system::error_code ec;
  if (!options.pin_sha256.empty()) {
    if (!is_sha256_hex(options.pin_sha256)) {
      return fail(ErrorCode::kInvalidArgument, "a CA pin is 64 hex digits", "pin");
    }
    // The chain is checked against the pin after the handshake, before anything is sent.
    ctx->set_verify_mode(ssl::verify_none);
    return ctx;
  }
  if (!options.ca_file.empty()) {
    ctx->load_verify_file(options.ca_file, ec);
    if (ec) {
      return fail(ErrorCode::kInvalidArgument,
                  "cannot load CA certificates from " + options.ca_file + ": " + ec.message(),
                  "ca_file");
    }
  } else {
    ctx->set_default_verify_paths(ec);
  }
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

Result<void> prepare_client(ssl_st* ssl, const std::string& host, const TlsClientOptions& options) {
  if (!is_ip(host) && SSL_set_tlsext_host_name(ssl, host.c_str()) != 1) {
    return fail(ErrorCode::kInvalidArgument, "bad TLS server name " + host);
  }
  if (options.pin_sha256.empty() && !expect_host(SSL_get0_param(ssl), host)) {
    return fail(ErrorCode::kInvalidArgument, "bad TLS host name " + host);
  }
  return {};
}

Result<std::string> check_pinned_chain(ssl_st* ssl, const std::string& host,
                                       std::string_view pin_sha256) {
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (chain == nullptr || leaf == nullptr) {
    return fail(ErrorCode::kUnavailable, "the server sent no certificate");
  }
  X509* anchor = nullptr;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    X509* cert = sk_X509_value(chain, i);
    std::string hash = spki_sha256(cert);
    if (hash.size() == pin_sha256.size() &&
        std::equal(hash.begin(), hash.end(), pin_sha256.begin(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      anchor = cert;
    }
  }
  if (anchor == nullptr) {
    return fail(ErrorCode::kUnavailable,
                "the server's certificate chain does not hold the CA the join token names "
                "(wrong control plane, or its certificate file lacks the CA)");
  }
  X509_STORE* store = X509_STORE_new();
  X509_STORE_CTX* verify = X509_STORE_CTX_new();
  bool ok = store != nullptr && verify != nullptr && X509_STORE_add_cert(store, anchor) == 1 &&
            X509_STORE_CTX_init(verify, store, leaf, chain) == 1 &&
            expect_host(X509_STORE_CTX_get0_param(verify), host) && X509_verify_cert(verify) == 1;
  std::string why = ok || verify == nullptr
                        ? ""
                        : X509_verify_cert_error_string(X509_STORE_CTX_get_error(verify));
  X509_STORE_CTX_free(verify);
  X509_STORE_free(store);
  if (!ok) {
    return fail(ErrorCode::kUnavailable,
                "the server's certificate does not verify under the pinned CA: " + why);
  }
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(out, anchor);
  char* data = nullptr;
  long length = BIO_get_mem_data(out, &data);
  std::string pem(data, static_cast<size_t>(length));
  BIO_free(out);
  return pem;
}

Result<std::string> spki_sha256_of_file(const std::string& pem_file) {
  BIO* in = BIO_new_file(pem_file.c_str(), "r");
  if (in == nullptr) {
    return fail(ErrorCode::kInvalidArgument, "cannot read " + pem_file + ": " + openssl_error(),
                "tls_ca");
  }
  X509* cert = PEM_read_bio_X509(in, nullptr, nullptr, nullptr);
  BIO_free(in);
  if (cert == nullptr) {
    return fail(ErrorCode::kInvalidArgument, pem_file + " holds no PEM certificate", "tls_ca");
  }
  std::string hash = spki_sha256(cert);
  X509_free(cert);
  return hash;
}

}  // namespace fabrica::crypto
