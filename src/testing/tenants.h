// Tenants for the unit tests of a service: one group per name, each with an administrator
// ("NAME-admin") and a plain member ("NAME-dev"), made through the real Identity service.
// Header only: the tests that include it link fabrica_auth already.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "auth/identity.h"

namespace fabrica::testing {

inline void add_tenants(auth::Identity& identity, const auth::Caller& admin,
                        std::initializer_list<const char*> names, std::vector<int64_t>& gids,
                        std::vector<auth::Caller>& bosses, std::vector<auth::Caller>& members) {
  for (const char* tenant : names) {
    auto g = identity.create_group(admin, {.name = tenant});
    ASSERT_TRUE(g) << g.error().message();
    gids.push_back(g->header.id);
    auto boss = identity.create_user(
        admin,
        {.name = std::string(tenant) + "-admin", .password = "password-123", .gid = g->header.id});
    ASSERT_TRUE(boss) << boss.error().message();
    ASSERT_TRUE(identity.add_admin(admin, g->header.id, boss->header.id));
    bosses.push_back(*identity.caller_for(boss->header.id, "test"));
    auto member = identity.create_user(
        admin,
        {.name = std::string(tenant) + "-dev", .password = "password-123", .gid = g->header.id});
    ASSERT_TRUE(member) << member.error().message();
    members.push_back(*identity.caller_for(member->header.id, "test"));
  }
}

}  // namespace fabrica::testing
