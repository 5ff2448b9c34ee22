// The default thread count's inputs: cgroup v1 and v2 CPU quotas read from
// fake cgroup trees (the real files' formats, as the kernel writes them).
#include "common/cpu_quota.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace streamgen {
namespace {

namespace fs = std::filesystem;

class CgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("cgroup-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void Write(const std::string& rel, const std::string& text) {
    const fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  std::optional<double> Limit() {
    return CgroupCpuLimit((root_ / "sys").string(), (root_ / "proc-self-cgroup").string());
  }
  fs::path root_;
};

TEST_F(CgroupTree, V2QuotaOfTheProcessCgroup) {
  Write("proc-self-cgroup", "0::/system.slice/app.service\n");
  Write("sys/system.slice/app.service/cpu.max", "150000 100000\n");
  Write("sys/system.slice/cpu.max", "max 100000\n");
  ASSERT_TRUE(Limit().has_value());
  EXPECT_DOUBLE_EQ(*Limit(), 1.5);
}

TEST_F(CgroupTree, V2AncestorLimitApplies) {
  Write("proc-self-cgroup", "0::/kubepods/pod1/ctr\n");
  Write("sys/kubepods/pod1/ctr/cpu.max", "max 100000\n");
  Write("sys/kubepods/pod1/cpu.max", "250000 100000\n");
  Write("sys/kubepods/cpu.max", "800000 100000\n");
  ASSERT_TRUE(Limit().has_value());
  EXPECT_DOUBLE_EQ(*Limit(), 2.5);
}

TEST_F(CgroupTree, V2NamespacedContainerReadsTheRoot) {
  // Inside a container with its own cgroup namespace the path is "/".
  Write("proc-self-cgroup", "0::/\n");
  Write("sys/cpu.max", "50000 100000\n");
  ASSERT_TRUE(Limit().has_value());
  EXPECT_DOUBLE_EQ(*Limit(), 0.5);
}

TEST_F(CgroupTree, V2Unlimited) {
  Write("proc-self-cgroup", "0::/user.slice\n");
  Write("sys/user.slice/cpu.max", "max 100000\n");
  EXPECT_FALSE(Limit().has_value());
}

TEST_F(CgroupTree, V1CpuController) {
  Write("proc-self-cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n");
  Write("sys/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "200000\n");
  Write("sys/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
  ASSERT_TRUE(Limit().has_value());
  EXPECT_DOUBLE_EQ(*Limit(), 2.0);
}

TEST_F(CgroupTree, V1UnlimitedIsMinusOne) {
  Write("proc-self-cgroup", "1:cpu:/\n");
  Write("sys/cpu/cpu.cfs_quota_us", "-1\n");
  Write("sys/cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_FALSE(Limit().has_value());
}

TEST_F(CgroupTree, MissingFilesMeanUnknown) {
  EXPECT_FALSE(Limit().has_value());  // no proc file at all
  Write("proc-self-cgroup", "0::/gone\n");
  EXPECT_FALSE(Limit().has_value());
  Write("sys/gone/cpu.max", "garbage\n");
  EXPECT_FALSE(Limit().has_value());
}

TEST(DefaultThreadCount, WithinAffinity) {
  const int n = DefaultThreadCount();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, AffinityCpuCount());
  EXPECT_NE(DescribeDefaultThreads().find("affinity"), std::string::npos);
}

}  // namespace
}  // namespace streamgen
