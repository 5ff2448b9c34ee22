// The KV cache manager alone (no scheduler, no torch): block tables and
// counts, prefix publishing and matching, eviction. tests/scheduler_test.cc
// drives it through the scheduler's policy.
#include "engine/kv/kv_cache_manager.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::vector<int> Ids(int first, int n) {
  std::vector<int> ids;
  for (int i = 0; i < n; ++i) ids.push_back(first + i);
  return ids;
}

TEST(KvCacheManagerTest, AllocatesBlocksForPositionsAndFreesThem) {
  KvCacheManager kv(/*num_blocks=*/8, /*block_size=*/4, /*prefix_caching=*/false);
  EXPECT_EQ(kv.num_blocks(), 8);
  EXPECT_EQ(kv.block_size(), 4);
  EXPECT_EQ(kv.BlocksFor(0), 0);
  EXPECT_EQ(kv.BlocksFor(1), 1);
  EXPECT_EQ(kv.BlocksFor(4), 1);
  EXPECT_EQ(kv.BlocksFor(5), 2);
  kv.AddSequence(1, 10, {});
  EXPECT_THAT(kv.BlockTable(1), IsEmpty());
  kv.AllocateSlots(1, 10);
  EXPECT_THAT(kv.BlockTable(1), ElementsAre(0, 1, 2));
  kv.AllocateSlots(1, 12);  // still inside the third block
  EXPECT_THAT(kv.BlockTable(1), ElementsAre(0, 1, 2));
  kv.AllocateSlots(1, 13);
  EXPECT_THAT(kv.BlockTable(1), ElementsAre(0, 1, 2, 3));
  kv.AddSequence(2, 3, {});
  kv.AllocateSlots(2, 3);
  EXPECT_THAT(kv.BlockTable(2), ElementsAre(4));
  EXPECT_EQ(kv.num_free_blocks(), 3);
  EXPECT_EQ(kv.num_used_blocks(), 5);
  // Freeing keeps the sequence (preemption); removing forgets it.
  kv.FreeBlocks(1);
  EXPECT_THAT(kv.BlockTable(1), IsEmpty());
  EXPECT_EQ(kv.num_free_blocks(), 7);
  kv.AllocateSlots(1, 1);  // the last freed id is reused first
  EXPECT_THAT(kv.BlockTable(1), ElementsAre(3));
  kv.RemoveSequence(1);
  kv.RemoveSequence(2);
  kv.RemoveSequence(99);  // unknown: no-op
  EXPECT_THAT(kv.BlockTable(1), IsEmpty());
  EXPECT_EQ(kv.num_free_blocks(), 8);
  EXPECT_EQ(kv.num_used_blocks(), 0);
  EXPECT_EQ(kv.num_cached_blocks(), 0);
}

TEST(KvCacheManagerTest, PublishesFullPromptBlocksAndMatchesThemFromTheStart) {
  KvCacheManager kv(16, 4, /*prefix_caching=*/true);
  kv.AddSequence(1, 10, Ids(100, 10));
  EXPECT_EQ(kv.KeyedPromptBlocks(1), 2);  // positions 0-3 and 4-7; 8-9 is partial
  kv.AllocateSlots(1, 10);
  kv.Publish(1, 5);  // only the first block is full of computed positions
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  kv.Publish(1, 10);
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  const std::vector<int> a = kv.BlockTable(1);
  // The same first 9 tokens: both full blocks, held by 1 (none evictable).
  std::vector<int> same = Ids(100, 9);
  same.push_back(7);
  kv.AddSequence(2, 10, same);
  const KvCacheManager::PrefixMatch match = kv.MatchPrefix(2);
  EXPECT_THAT(match.blocks, ElementsAre(a[0], a[1]));
  EXPECT_EQ(match.evictable, 0);
  const int free_before = kv.num_free_blocks();
  EXPECT_EQ(kv.SharePrefix(2, match), 8);
  EXPECT_EQ(kv.num_free_blocks(), free_before);
  EXPECT_THAT(kv.BlockTable(2), ElementsAre(a[0], a[1]));
  EXPECT_THAT(kv.MatchPrefix(2).blocks, IsEmpty());  // it holds blocks already
  // A difference in the second block: only the first matches.
  std::vector<int> second = Ids(100, 10);
  second[5] = 5;
  kv.AddSequence(3, 10, second);
  EXPECT_THAT(kv.MatchPrefix(3).blocks, ElementsAre(a[0]));
  // A difference in the first block: nothing (keys chain the blocks before).
  std::vector<int> first = Ids(100, 10);
  first[1] = 5;
  kv.AddSequence(4, 10, first);
  EXPECT_THAT(kv.MatchPrefix(4).blocks, IsEmpty());
  // No ids, wrong count, or a prompt shorter than a block: no keys, no match.
  kv.AddSequence(5, 10, {});
  kv.AddSequence(6, 10, Ids(100, 9));
  kv.AddSequence(7, 3, Ids(100, 3));
  for (uint64_t id : {5, 6, 7}) {
    EXPECT_EQ(kv.KeyedPromptBlocks(id), 0) << id;
    EXPECT_THAT(kv.MatchPrefix(id).blocks, IsEmpty()) << id;
  }
  EXPECT_THAT(kv.MatchPrefix(99).blocks, IsEmpty());  // unknown id
}

TEST(KvCacheManagerTest, CachingOffNeitherKeysNorPublishes) {
  KvCacheManager kv(16, 4, /*prefix_caching=*/false);
  kv.AddSequence(1, 10, Ids(100, 10));
  EXPECT_EQ(kv.KeyedPromptBlocks(1), 0);
  kv.AllocateSlots(1, 10);
  kv.Publish(1, 10);
  EXPECT_EQ(kv.num_cached_blocks(), 0);
  kv.AddSequence(2, 10, Ids(100, 10));
  EXPECT_THAT(kv.MatchPrefix(2).blocks, IsEmpty());
}

TEST(KvCacheManagerTest, MatchComparesTokenIdsNotOnlyKeys) {
  // Two different 2-token blocks whose keys collide (FNV-1a over 32-bit ids
  // is not collision-free: these two were constructed from its arithmetic). Matching compares the
  // ids, so the second prompt shares nothing, and its own copy stays private.
  const std::vector<int> block = {1939669891, 5};
  const std::vector<int> colliding = {-446497668, -1795162552};
  KvCacheManager kv(8, 2, /*prefix_caching=*/true);
  kv.AddSequence(1, 3, {block[0], block[1], 7});
  kv.AllocateSlots(1, 3);
  kv.Publish(1, 3);
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  kv.AddSequence(2, 3, {colliding[0], colliding[1], 7});
  EXPECT_EQ(kv.KeyedPromptBlocks(2), 1);
  EXPECT_THAT(kv.MatchPrefix(2).blocks, IsEmpty());
  kv.AllocateSlots(2, 3);
  kv.Publish(2, 3);  // its key is taken: not published
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  // The same ids do match.
  kv.AddSequence(3, 3, {block[0], block[1], 9});
  EXPECT_THAT(kv.MatchPrefix(3).blocks, ElementsAre(kv.BlockTable(1)[0]));
}

TEST(KvCacheManagerTest, SharesAtMostPromptMinusOneOverBlockSize) {
  KvCacheManager kv(16, 4, /*prefix_caching=*/true);
  kv.AddSequence(1, 9, Ids(100, 9));
  kv.AllocateSlots(1, 9);
  kv.Publish(1, 9);
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  // 8 tokens (two full blocks, both cached): (8 - 1) / 4 = 1 is shared, so
  // that at least one prompt token is computed.
  kv.AddSequence(2, 8, Ids(100, 8));
  EXPECT_THAT(kv.MatchPrefix(2).blocks, ElementsAre(kv.BlockTable(1)[0]));
  // 9 tokens: (9 - 1) / 4 = 2.
  kv.AddSequence(3, 9, Ids(100, 9));
  EXPECT_THAT(kv.MatchPrefix(3).blocks, ElementsAre(kv.BlockTable(1)[0], kv.BlockTable(1)[1]));
}

TEST(KvCacheManagerTest, EvictableBlocksCountAsFreeAndGoLeastRecentlyReleasedFirst) {
  KvCacheManager kv(4, 2, /*prefix_caching=*/true);
  kv.AddSequence(1, 3, Ids(100, 3));  // one full prompt block each
  kv.AllocateSlots(1, 3);
  kv.Publish(1, 3);
  kv.AddSequence(2, 3, Ids(200, 3));
  kv.AllocateSlots(2, 3);
  kv.Publish(2, 3);
  const int block1 = kv.BlockTable(1)[0];
  const int block2 = kv.BlockTable(2)[0];
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  EXPECT_EQ(kv.num_free_blocks(), 0);  // held by sequences: not evictable
  // 2 is released before 1 (though published after it).
  kv.RemoveSequence(2);
  kv.RemoveSequence(1);
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  EXPECT_EQ(kv.num_free_blocks(), 4);  // 2 free + 2 evictable
  EXPECT_EQ(kv.num_used_blocks(), 0);
  // 3 blocks: the 2 free ones, then 2's cached block is evicted.
  kv.AddSequence(3, 6, {});
  kv.AllocateSlots(3, 6);
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  EXPECT_EQ(kv.num_free_blocks(), 1);
  EXPECT_EQ(kv.BlockTable(3).back(), block2);
  kv.AddSequence(4, 3, Ids(200, 3));
  EXPECT_THAT(kv.MatchPrefix(4).blocks, IsEmpty());
  // 1's block survived; sharing it takes it out of the free count.
  kv.AddSequence(5, 3, Ids(100, 3));
  const KvCacheManager::PrefixMatch match = kv.MatchPrefix(5);
  EXPECT_THAT(match.blocks, ElementsAre(block1));
  EXPECT_EQ(match.evictable, 1);
  EXPECT_EQ(kv.SharePrefix(5, match), 2);
  EXPECT_EQ(kv.num_free_blocks(), 0);
  // Freed again (preemption), it is evictable again and still matches.
  kv.FreeBlocks(5);
  EXPECT_EQ(kv.num_free_blocks(), 1);
  EXPECT_THAT(kv.MatchPrefix(5).blocks, ElementsAre(block1));
}

TEST(KvCacheManagerTest, MatchesThePartialBlockThatAgreesLongestOnceItIsWritten) {
  KvCacheManager kv(8, 4, /*prefix_caching=*/true);
  kv.BeginStep();
  kv.AddSequence(1, 9, Ids(100, 9));  // blocks 100-103, 104-107
  kv.AllocateSlots(1, 9);
  kv.Publish(1, 9);
  const std::vector<int> a = kv.BlockTable(1);
  std::vector<int> prompt = Ids(100, 7);  // 100-106, then 9 9
  prompt.insert(prompt.end(), {9, 9});
  kv.AddSequence(2, 9, prompt);
  // Published in this step: shared, but not yet copyable.
  KvCacheManager::PrefixMatch match = kv.MatchPrefix(2);
  EXPECT_THAT(match.blocks, ElementsAre(a[0]));
  EXPECT_EQ(match.partial_block, -1);
  kv.BeginStep();
  match = kv.MatchPrefix(2);
  EXPECT_THAT(match.blocks, ElementsAre(a[0]));
  EXPECT_EQ(match.partial_block, a[1]);
  EXPECT_EQ(match.partial_tokens, 3);
  EXPECT_EQ(match.evictable, 0);  // 1 still holds both
  KvCacheManager::BlockCopy copy;
  EXPECT_EQ(kv.SharePrefix(2, match, &copy), 7);
  ASSERT_EQ(kv.BlockTable(2).size(), 2u);
  EXPECT_EQ(kv.BlockTable(2)[0], a[0]);
  EXPECT_EQ(copy.from, a[1]);
  EXPECT_EQ(copy.to, kv.BlockTable(2)[1]);
  EXPECT_NE(copy.to, a[1]);
  // Evictable sources count: the copy's block must not evict its source.
  kv.RemoveSequence(1);
  kv.RemoveSequence(2);
  kv.AddSequence(3, 9, prompt);
  match = kv.MatchPrefix(3);
  EXPECT_EQ(match.partial_block, a[1]);
  EXPECT_EQ(match.evictable, 2);
  EXPECT_TRUE(kv.IsEvictable(a[1]));
}

TEST(KvCacheManagerTest, GeneratedTokensFillKeyedBlocks) {
  KvCacheManager kv(8, 4, /*prefix_caching=*/true);
  kv.BeginStep();
  kv.AddSequence(1, 3, Ids(100, 3));
  EXPECT_TRUE(kv.Keyed(1));
  EXPECT_EQ(kv.KeyedPromptBlocks(1), 0);
  kv.AllocateSlots(1, 3);
  for (int token : {103, 104, 105, 106}) kv.AppendToken(1, token);
  EXPECT_EQ(kv.KeyedPromptBlocks(1), 1);  // ids 100-106: one full block
  kv.AllocateSlots(1, 6);
  kv.Publish(1, 6);
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  // The same block from a prompt: its key is the same.
  kv.BeginStep();
  kv.AddSequence(2, 6, Ids(100, 6));
  EXPECT_THAT(kv.MatchPrefix(2).blocks, ElementsAre(kv.BlockTable(1)[0]));
  // Not keyed: no ids given, caching off, or a forked choice.
  kv.AddSequence(3, 6, {});
  kv.AppendToken(3, 1);
  EXPECT_FALSE(kv.Keyed(3));
  EXPECT_EQ(kv.KeyedPromptBlocks(3), 0);
}

}  // namespace
}  // namespace streamgen
