/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Input of vblk's module-local bindgen run (see Kbuild): the kernel headers
 * the abstraction layer (rust/sys) calls into, the one-line helpers of
 * shim.h, and constants bindgen cannot evaluate from their macros (casts,
 * __force): each VBLK_CONST_X is the kernel's X, computed by the compiler
 * from the kernel's own definition, so nothing is copied by hand.
 */
#include <crypto/skcipher.h>
#include <linux/bio.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/completion.h>
#include <linux/crc32c.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/mempool.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <linux/sched.h>
#include <linux/vmalloc.h>
#include <linux/wait_bit.h>
#include <linux/workqueue.h>

#include "shim.h"

const gfp_t VBLK_CONST_GFP_KERNEL = GFP_KERNEL;
const gfp_t VBLK_CONST_GFP_NOIO = GFP_NOIO;
const gfp_t VBLK_CONST_GFP_NOWAIT = GFP_NOWAIT | __GFP_NOWARN;

const blk_opf_t VBLK_CONST_REQ_FUA = REQ_FUA;
const blk_opf_t VBLK_CONST_REQ_PREFLUSH = REQ_PREFLUSH;
const blk_opf_t VBLK_CONST_REQ_SYNC = REQ_SYNC;
const blk_opf_t VBLK_CONST_REQ_META = REQ_META;
const blk_opf_t VBLK_CONST_REQ_PRIO = REQ_PRIO;
const blk_opf_t VBLK_CONST_REQ_RAHEAD = REQ_RAHEAD;
const blk_opf_t VBLK_CONST_REQ_NOWAIT = REQ_NOWAIT;
const blk_opf_t VBLK_CONST_REQ_POLLED = REQ_POLLED;
const blk_opf_t VBLK_CONST_REQ_NOUNMAP = REQ_NOUNMAP;
const blk_opf_t VBLK_CONST_REQ_OP_MASK = REQ_OP_MASK;

const blk_features_t VBLK_CONST_BLK_FEAT_IO_STAT = BLK_FEAT_IO_STAT;
const blk_features_t VBLK_CONST_BLK_FEAT_NOWAIT = BLK_FEAT_NOWAIT;
const blk_features_t VBLK_CONST_BLK_FEAT_ZONED = BLK_FEAT_ZONED;
const blk_features_t VBLK_CONST_BLK_FEAT_POLL = BLK_FEAT_POLL;
const blk_features_t VBLK_CONST_BLK_FEAT_WRITE_CACHE = BLK_FEAT_WRITE_CACHE;
const blk_features_t VBLK_CONST_BLK_FEAT_FUA = BLK_FEAT_FUA;

const blk_status_t VBLK_CONST_BLK_STS_OK = BLK_STS_OK;
const blk_status_t VBLK_CONST_BLK_STS_NOTSUPP = BLK_STS_NOTSUPP;
const blk_status_t VBLK_CONST_BLK_STS_IOERR = BLK_STS_IOERR;
const blk_status_t VBLK_CONST_BLK_STS_NOSPC = BLK_STS_NOSPC;

const blk_mode_t VBLK_CONST_BLK_OPEN_RW = BLK_OPEN_READ | BLK_OPEN_WRITE;

const unsigned long VBLK_CONST_PAGE_SIZE = PAGE_SIZE;
const unsigned int VBLK_CONST_BIO_MAX_VECS = BIO_MAX_VECS;
const unsigned int VBLK_CONST_MINORBITS = MINORBITS;
const unsigned long VBLK_CONST_BLK_SEG_BOUNDARY_MASK = BLK_SEG_BOUNDARY_MASK;
const int VBLK_CONST_MISC_DYNAMIC_MINOR = MISC_DYNAMIC_MINOR;
const int VBLK_CONST_NUMA_NO_NODE = NUMA_NO_NODE;
const int VBLK_CONST_WORK_CPU_UNBOUND = WORK_CPU_UNBOUND;
const unsigned int VBLK_CONST_WQ_RECLAIM_UNBOUND = WQ_MEM_RECLAIM | WQ_UNBOUND;
const int VBLK_CONST_CAP_SYS_ADMIN = CAP_SYS_ADMIN;
const u32 VBLK_CONST_CRYPTO_ALG_ALLOCATES_MEMORY = CRYPTO_ALG_ALLOCATES_MEMORY;
const u32 VBLK_CONST_CRYPTO_TFM_REQ_MAY_BACKLOG = CRYPTO_TFM_REQ_MAY_BACKLOG;
const int VBLK_CONST_EINPROGRESS = EINPROGRESS;

/*
 * The C layout of every struct rust/sys reads or writes, as the compiler
 * computes it: bindings.rs checks bindgen's Rust structs against these at
 * compile time (an empty cache-aligned struct, for one, is laid out
 * differently by bindgen), so a field offset is never taken on trust.
 */
#define VBLK_OFF(t, f) const unsigned long VBLK_OFF_##t##_##f = offsetof(struct t, f)
#define VBLK_SIZE(t) const unsigned long VBLK_SIZE_##t = sizeof(struct t)
VBLK_OFF(request, q);
VBLK_OFF(request, cmd_flags);
VBLK_OFF(request, __data_len);
VBLK_OFF(request, __sector);
VBLK_OFF(request, bio);
VBLK_OFF(request_queue, queuedata);
VBLK_OFF(request_queue, limits);
VBLK_OFF(bio, bi_next);
VBLK_OFF(bio, bi_opf);
VBLK_OFF(bio, bi_status);
VBLK_OFF(bio, bi_iter);
VBLK_OFF(bio, bi_end_io);
VBLK_OFF(bio, bi_vcnt);
VBLK_OFF(bio, bi_io_vec);
VBLK_OFF(bio_vec, bv_page);
VBLK_OFF(bio_vec, bv_len);
VBLK_OFF(bio_vec, bv_offset);
VBLK_OFF(bvec_iter, bi_sector);
VBLK_OFF(bvec_iter, bi_size);
VBLK_OFF(bvec_iter, bi_idx);
VBLK_OFF(bvec_iter, bi_bvec_done);
VBLK_OFF(gendisk, major);
VBLK_OFF(gendisk, first_minor);
VBLK_OFF(gendisk, disk_name);
VBLK_OFF(gendisk, fops);
VBLK_OFF(gendisk, queue);
VBLK_OFF(gendisk, private_data);
VBLK_OFF(gendisk, flags);
VBLK_OFF(gendisk, open_mutex);
VBLK_OFF(block_device, bd_start_sect);
VBLK_OFF(block_device, bd_dev);
VBLK_OFF(block_device, bd_disk);
VBLK_OFF(block_device, bd_queue);
VBLK_OFF(blk_mq_tag_set, ops);
VBLK_OFF(blk_mq_tag_set, nr_hw_queues);
VBLK_OFF(blk_mq_tag_set, queue_depth);
VBLK_OFF(blk_mq_tag_set, cmd_size);
VBLK_OFF(blk_mq_tag_set, numa_node);
VBLK_OFF(blk_mq_tag_set, flags);
VBLK_OFF(blk_mq_tag_set, driver_data);
VBLK_OFF(blk_mq_queue_data, rq);
VBLK_OFF(blk_mq_ops, queue_rq);
VBLK_OFF(blk_mq_ops, queue_rqs);
VBLK_OFF(blk_mq_ops, init_hctx);
VBLK_OFF(queue_limits, features);
VBLK_OFF(queue_limits, max_hw_sectors);
VBLK_OFF(queue_limits, max_sectors);
VBLK_OFF(queue_limits, max_user_sectors);
VBLK_OFF(queue_limits, max_segments);
VBLK_OFF(queue_limits, max_segment_size);
VBLK_OFF(queue_limits, virt_boundary_mask);
VBLK_OFF(queue_limits, seg_boundary_mask);
VBLK_OFF(queue_limits, max_zone_append_sectors);
VBLK_OFF(queue_limits, max_open_zones);
VBLK_OFF(queue_limits, max_active_zones);
VBLK_OFF(queue_limits, zone_write_granularity);
VBLK_OFF(queue_limits, max_hw_discard_sectors);
VBLK_OFF(queue_limits, discard_granularity);
VBLK_OFF(queue_limits, discard_alignment);
VBLK_OFF(queue_limits, max_discard_segments);
VBLK_OFF(queue_limits, max_write_zeroes_sectors);
VBLK_OFF(queue_limits, logical_block_size);
VBLK_OFF(queue_limits, physical_block_size);
VBLK_OFF(queue_limits, io_min);
VBLK_OFF(queue_limits, io_opt);
VBLK_OFF(queue_limits, chunk_sectors);
VBLK_OFF(queue_limits, dma_alignment);
VBLK_OFF(block_device_operations, open);
VBLK_OFF(block_device_operations, owner);
VBLK_OFF(file_operations, owner);
VBLK_OFF(file_operations, llseek);
VBLK_OFF(file_operations, unlocked_ioctl);
VBLK_OFF(file_operations, compat_ioctl);
VBLK_OFF(file_operations, open);
VBLK_OFF(file, private_data);
VBLK_OFF(miscdevice, minor);
VBLK_OFF(miscdevice, name);
VBLK_OFF(miscdevice, fops);
VBLK_OFF(miscdevice, nodename);
VBLK_OFF(miscdevice, mode);
VBLK_OFF(skcipher_request, cryptlen);
VBLK_OFF(skcipher_request, iv);
VBLK_OFF(skcipher_request, src);
VBLK_OFF(skcipher_request, dst);
VBLK_OFF(skcipher_request, base);
VBLK_OFF(crypto_async_request, complete);
VBLK_OFF(crypto_async_request, data);
VBLK_OFF(crypto_async_request, tfm);
VBLK_OFF(crypto_async_request, flags);
VBLK_OFF(crypto_skcipher, base);
VBLK_OFF(crypto_wait, completion);
VBLK_OFF(crypto_wait, err);
VBLK_SIZE(request);
VBLK_SIZE(request_queue);
VBLK_SIZE(bio);
VBLK_SIZE(bio_vec);
VBLK_SIZE(bvec_iter);
VBLK_SIZE(gendisk);
VBLK_SIZE(block_device);
VBLK_SIZE(blk_mq_tag_set);
VBLK_SIZE(blk_mq_queue_data);
VBLK_SIZE(blk_mq_ops);
VBLK_SIZE(queue_limits);
VBLK_SIZE(block_device_operations);
VBLK_SIZE(file_operations);
VBLK_SIZE(file);
VBLK_SIZE(miscdevice);
VBLK_SIZE(skcipher_request);
VBLK_SIZE(crypto_async_request);
VBLK_SIZE(crypto_skcipher);
VBLK_SIZE(crypto_wait);
VBLK_SIZE(bio_set);
VBLK_SIZE(lock_class_key);
VBLK_SIZE(work_struct);
VBLK_SIZE(blk_plug);
VBLK_SIZE(scatterlist);
VBLK_SIZE(completion);
VBLK_SIZE(rq_list);
