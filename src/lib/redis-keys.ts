import IORedis from 'ioredis';

/**
 * Deletes every key under `prefix:` (a queue prefix of a test, bench or scratch run), a SCAN page at
 * a time. The Redis may be shared: never FLUSHALL, only this prefix goes.
 */
export async function deleteRedisPrefix(redisUrl: string, prefix: string): Promise<void> {
  const redis = new IORedis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
