/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One-line helpers for what bindgen cannot reach: static inline functions
 * and macros of the kernel. Each is one call (see shim.c); every rule and
 * every piece of state is Rust, in rust/sys, which documents how each is
 * called. Exported kernel functions are called from Rust directly.
 */
#ifndef VBLK_SHIM_H
#define VBLK_SHIM_H

#include <linux/types.h>

struct block_device;
struct completion;
struct crypto_skcipher;
struct gendisk;
struct lock_class_key;
struct mutex;
struct page;
struct request;
struct rq_list;
struct work_struct;
typedef void (*work_func_t)(struct work_struct *work);

/* Tasks, scheduling, memory scopes. */
struct blk_plug;
struct blk_plug *vblk_shim_current_plug(void);
void vblk_shim_set_current_plug(struct blk_plug *plug);
void vblk_shim_cond_resched(void);
bool vblk_shim_module_get(void);
int vblk_shim_event_wait(u32 *counter, u32 seen);
unsigned int vblk_shim_noio_save(void);
void vblk_shim_noio_restore(unsigned int flags);
u64 vblk_shim_uptime_ms(void);
void vblk_shim_mutex_lock(struct mutex *lock);
void vblk_shim_memzero_explicit(void *p, size_t len);
void vblk_shim_init_work(struct work_struct *work, work_func_t fn);
void vblk_shim_init_completion(struct completion *done);
void vblk_shim_lockdep_register_key(struct lock_class_key *key);
void vblk_shim_lockdep_unregister_key(struct lock_class_key *key);

/* Block devices and disks. */
u64 vblk_shim_bdev_nr_sectors(struct block_device *bdev);
unsigned int vblk_shim_bdev_logical_block_size(struct block_device *bdev);
unsigned int vblk_shim_bdev_max_discard_sectors(struct block_device *bdev);
unsigned int vblk_shim_bdev_write_zeroes_sectors(struct block_device *bdev);
unsigned int vblk_shim_disk_openers(struct gendisk *disk);
struct request *vblk_shim_rq_list_pop(struct rq_list *list);

/* Pages. */
void *vblk_shim_kmap_local_page(struct page *page);
void vblk_shim_kunmap_local(const void *addr);
struct page *vblk_shim_nth_page(struct page *page, unsigned long n);
void vblk_shim_flush_dcache_page(struct page *page);
void vblk_shim_flush_kernel_vmap_range(void *addr, int size);
void vblk_shim_invalidate_kernel_vmap_range(void *addr, int size);
bool vblk_shim_virt_addr_valid(const void *addr);

/* Symmetric ciphers. */
void vblk_shim_crypto_free_skcipher(struct crypto_skcipher *tfm);
unsigned int vblk_shim_crypto_skcipher_ivsize(struct crypto_skcipher *tfm);
unsigned int vblk_shim_crypto_skcipher_blocksize(struct crypto_skcipher *tfm);
unsigned int vblk_shim_crypto_skcipher_reqsize(struct crypto_skcipher *tfm);

#endif /* VBLK_SHIM_H */
