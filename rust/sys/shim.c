// SPDX-License-Identifier: GPL-2.0
/*
 * The C part of vblk's abstraction layer: one-line helpers for static inline
 * functions and macros, which bindgen cannot turn into callable symbols (as
 * the kernel's rust/helpers). One call each, no branches, no state:
 * rust/sys holds every rule. scripts/check-c-shim.py enforces the shape.
 */
#include <crypto/skcipher.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/completion.h>
#include <linux/highmem.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/sched/mm.h>
#include <linux/string.h>
#include <linux/wait_bit.h>
#include <linux/workqueue.h>

#include "shim.h"

struct blk_plug *vblk_shim_current_plug(void) { return current->plug; }
void vblk_shim_set_current_plug(struct blk_plug *plug) { current->plug = plug; }
void vblk_shim_cond_resched(void) { cond_resched(); }
bool vblk_shim_module_get(void) { return try_module_get(THIS_MODULE); }
unsigned int vblk_shim_noio_save(void) { return memalloc_noio_save(); }
void vblk_shim_noio_restore(unsigned int flags) { memalloc_noio_restore(flags); }
u64 vblk_shim_uptime_ms(void) { return jiffies64_to_msecs(get_jiffies_64()); }
void vblk_shim_mutex_lock(struct mutex *lock) { mutex_lock(lock); }
void vblk_shim_memzero_explicit(void *p, size_t len) { memzero_explicit(p, len); }
void vblk_shim_init_work(struct work_struct *work, work_func_t fn) { INIT_WORK(work, fn); }
void vblk_shim_init_completion(struct completion *done) { init_completion(done); }
void vblk_shim_lockdep_register_key(struct lock_class_key *key) { lockdep_register_key(key); }
void vblk_shim_lockdep_unregister_key(struct lock_class_key *key) { lockdep_unregister_key(key); }

int vblk_shim_event_wait(u32 *counter, u32 seen)
{
	return wait_var_event_interruptible(counter, READ_ONCE(*counter) != seen);
}

u64 vblk_shim_bdev_nr_sectors(struct block_device *bdev) { return bdev_nr_sectors(bdev); }

unsigned int vblk_shim_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

unsigned int vblk_shim_bdev_max_discard_sectors(struct block_device *bdev)
{
	return bdev_max_discard_sectors(bdev);
}

unsigned int vblk_shim_bdev_write_zeroes_sectors(struct block_device *bdev)
{
	return bdev_write_zeroes_sectors(bdev);
}

unsigned int vblk_shim_disk_openers(struct gendisk *disk) { return disk_openers(disk); }
struct request *vblk_shim_rq_list_pop(struct rq_list *list) { return rq_list_pop(list); }

void *vblk_shim_kmap_local_page(struct page *page) { return kmap_local_page(page); }
void vblk_shim_kunmap_local(const void *addr) { kunmap_local(addr); }
struct page *vblk_shim_nth_page(struct page *page, unsigned long n) { return nth_page(page, n); }
void vblk_shim_flush_dcache_page(struct page *page) { flush_dcache_page(page); }
void vblk_shim_flush_kernel_vmap_range(void *addr, int size) { flush_kernel_vmap_range(addr, size); }

void vblk_shim_invalidate_kernel_vmap_range(void *addr, int size)
{
	invalidate_kernel_vmap_range(addr, size);
}

bool vblk_shim_virt_addr_valid(const void *addr) { return virt_addr_valid(addr); }

void vblk_shim_crypto_free_skcipher(struct crypto_skcipher *tfm) { crypto_free_skcipher(tfm); }

unsigned int vblk_shim_crypto_skcipher_ivsize(struct crypto_skcipher *tfm)
{
	return crypto_skcipher_ivsize(tfm);
}

unsigned int vblk_shim_crypto_skcipher_blocksize(struct crypto_skcipher *tfm)
{
	return crypto_skcipher_blocksize(tfm);
}

unsigned int vblk_shim_crypto_skcipher_reqsize(struct crypto_skcipher *tfm)
{
	return crypto_skcipher_reqsize(tfm);
}
