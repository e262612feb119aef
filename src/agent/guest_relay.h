#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/error.h"
#include "crypto/tls.h"

namespace fabrica::agent {

// The guest API's relay on a host: a guest on a tenant network reaches it at the link-local
// address 169.254.169.254, port 80, with no route to the control plane's network.
//
// Per bridge the host's VMs use, the agent makes a network namespace holding one end of a
// veth pair (the other end is a port of the bridge) with 169.254.169.254/32 and an on-link
// default route, and listens there (OpenStack's metadata proxy idea). The namespace has no
// other interface: a guest reaches that one socket and nothing else of the host, whatever the
// tenant's addressing. Requests for /api/v1/guest/* go on to fabricad with the guest's own
// token (which names its VM); anything else is refused here. Linux only; needs root.
class GuestRelay {
 public:
  // `server`: fabricad's base URL, verified as `tls` says.
  GuestRelay(std::string server, crypto::TlsClientOptions tls);
  ~GuestRelay();
  GuestRelay(const GuestRelay&) = delete;
  GuestRelay& operator=(const GuestRelay&) = delete;

  // Makes the relay for `bridge` unless it is there (idempotent; a namespace left by an
  // earlier run is made again).
  Result<void> serve(const std::string& bridge);
  // Stops and removes the relay of `bridge` (its last VM went).
  void drop(const std::string& bridge);

  static constexpr const char* kAddress = "169.254.169.254";

 private:
  struct Relay {
    std::string netns;
    std::string veth;
    int listen_fd = -1;
    std::atomic<bool> stop{false};
    std::thread thread;
  };
  void accept_loop(Relay& relay);
  void answer(int fd);
  static void remove(Relay& relay);

  std::string server_;
  crypto::TlsClientOptions tls_;
  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Relay>> relays_;  // By bridge.
};

// "fgr-<bridge>": the relay's namespace; "fgr<6 hex>": the veth (15 characters at most).
std::string relay_netns(const std::string& bridge);
std::string relay_veth(const std::string& bridge);

}  // namespace fabrica::agent
