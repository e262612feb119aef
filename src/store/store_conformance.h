#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "store/store.h"

namespace fabrica::store {

// A backend under test: `open(dir)` opens (or reopens) the store whose files live in `dir`.
// Every Store implementation instantiates StoreConformanceTest with its own factory:
//   INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformanceTest, testing::Values(factory));
struct StoreFactory {
  std::string name;
  std::function<std::unique_ptr<Store>(const std::string& dir)> open;
};

class StoreConformanceTest : public testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override;
  void TearDown() override;
  std::unique_ptr<Store> open() { return GetParam().open(dir_); }

  std::string dir_;
};

}  // namespace fabrica::store
