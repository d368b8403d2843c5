/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C half of vblk's abstraction layer: prototypes of the shim functions that
 * Rust calls (bindgen reads this file), and of the Rust functions the shim
 * calls back. Kernel structures appear only as opaque forward declarations;
 * the Rust side (rust/sys) never looks inside them.
 */
#ifndef VBLK_SHIM_H
#define VBLK_SHIM_H

#include <linux/types.h>

struct request;
struct file;
struct queue_limits;
struct vblk_disk;
struct vblk_pool;

/* ---- control device (rust/sys/control.rs) ---- */

/* The control device's ioctl handler, implemented in Rust. */
typedef long (*vblk_control_fn)(const void *ctx, unsigned int cmd, unsigned long arg);

int vblk_shim_control_register(vblk_control_fn handler, const void *ctx);
void vblk_shim_control_deregister(void);
bool vblk_shim_capable_sys_admin(void);
void vblk_shim_cond_resched(void);
/* try_module_get/module_put of vblk itself. */
bool vblk_shim_module_get(void);
void vblk_shim_module_put(void);

/* ---- events (rust/sys/event.rs) ---- */

/* Waits until *counter != seen; -ERESTARTSYS if a signal arrives first. */
int vblk_shim_event_wait(u32 *counter, u32 seen);
/* Wakes everyone waiting on counter (any context). */
void vblk_shim_event_wake(u32 *counter);

/* ---- lower block devices (rust/sys/bdev.rs) ---- */

/*
 * Opens a block device read-write and claims it with vblk's module-wide
 * holder: by path if path is not NULL, else by dev (kernel encoding).
 * Returns NULL and sets *err on failure.
 */
struct file *vblk_shim_bdev_open(const char *path, u32 dev, int *err);
void vblk_shim_bdev_close(struct file *f);
u32 vblk_shim_bdev_devt(struct file *f);
/* The N of a vblkN lower device, U32_MAX for any other block device. */
u32 vblk_shim_bdev_vblk_index(struct file *f);
u64 vblk_shim_bdev_sectors(struct file *f);
u32 vblk_shim_bdev_logical_block_size(struct file *f);
bool vblk_shim_bdev_discard(struct file *f);
bool vblk_shim_bdev_write_zeroes(struct file *f);
/* The kernel's name of the device ("ram0", "vblk1"), NUL-terminated. */
void vblk_shim_bdev_name(struct file *f, char *buf, u32 len);
/* Synchronous cache flush (may sleep). */
int vblk_shim_bdev_flush(struct file *f);

/* Flags of vblk_shim_bdev_rw. */
enum vblk_rw_flag {
	VBLK_RW_WRITE = 1,
	VBLK_RW_PREFLUSH = 2,
	VBLK_RW_FUA = 4,
};

/*
 * Synchronous read or write of len bytes (a multiple of 512, at most
 * VBLK_RW_MAX_BYTES) at sector, from or into buf (kmalloc'd or vmalloc'd
 * kernel memory). Process context, outside any submitter (waits for the
 * bio). Returns 0 or a negative errno.
 */
#define VBLK_RW_MAX_BYTES (1024 * 1024)
int vblk_shim_bdev_rw(struct file *f, u64 sector, void *buf, u32 len, u32 flags);

/* ---- queue limits (rust/sys/limits.rs) ---- */

/* A heap queue_limits set to the stacking defaults; NULL if out of memory. */
struct queue_limits *vblk_shim_limits_new(void);
void vblk_shim_limits_free(struct queue_limits *lim);
/* Stacks the limits of f's device, used from sector offset; false if misaligned. */
bool vblk_shim_limits_stack(struct queue_limits *lim, struct file *f, u64 offset);
/* Discard/write-zeroes: off, or (if on) as stacked, or unlimited if nothing stacked. */
void vblk_shim_limits_discard(struct queue_limits *lim, bool supported);
void vblk_shim_limits_write_zeroes(struct queue_limits *lim, bool supported);
u32 vblk_shim_limits_logical_block_size(const struct queue_limits *lim);
/*
 * Raises the logical (and physical) block size to at least bytes (a power
 * of two, 512..4096), and the DMA alignment with it, so that every data
 * segment holds whole blocks.
 */
void vblk_shim_limits_block_size(struct queue_limits *lim, u32 bytes);
/*
 * A target's I/O hints: requests should not cross chunk_sectors (kept as
 * the gcd with what is there, dropped if not a whole number of physical
 * blocks), io_min the largest asked for, io_opt the lcm (bytes).
 */
void vblk_shim_limits_io_hints(struct queue_limits *lim, u32 chunk_sectors, u32 io_min,
			       u32 io_opt);

/* ---- blk-mq disks and requests (rust/sys/disk.rs) ---- */

/* Callbacks into Rust. */
struct vblk_disk_ops {
	/*
	 * A started request; Rust owns it until it ends it. in_worker: it was
	 * handed back by vblk_shim_rq_defer_map and runs on the disk's
	 * workqueue (process context outside any submitter: synchronous
	 * lower I/O is allowed).
	 */
	void (*queue_rq)(const void *ctx, struct request *rq, bool in_worker);
	/*
	 * A lower bio of rq, submitted with tag, completed with status (any
	 * context, even hard irq). The bio is already released.
	 */
	void (*lower_done)(struct request *rq, u64 tag, u8 status);
	/*
	 * A request deferred with vblk_shim_rq_defer, now running on the
	 * disk's WQ_MEM_RECLAIM workqueue (process context); Rust ends it.
	 */
	void (*finish)(const void *ctx, struct request *rq);
};

/* Operation of a request, as vblk sees it. */
enum vblk_op {
	VBLK_OP_READ = 0,
	VBLK_OP_WRITE = 1,
	VBLK_OP_FLUSH = 2,
	VBLK_OP_DISCARD = 3,
	VBLK_OP_WRITE_ZEROES = 4,
	VBLK_OP_OTHER = 5,
};

/* Request flags vblk looks at (REQ_* in the kernel). */
enum vblk_rq_flag {
	VBLK_RQ_FUA = 1 << 0,
	VBLK_RQ_PREFLUSH = 1 << 1,
	VBLK_RQ_SYNC = 1 << 2,
	VBLK_RQ_RAHEAD = 1 << 3,
};

/*
 * Creates and registers disk "vblk<index>" with the given limits, and its
 * workqueue (WQ_MEM_RECLAIM) for deferred request completion. pdu_size
 * bytes of per-request data follow each request; they must start with a
 * u32 count of lower bios in flight, which every vblk_shim_rq_* function
 * that submits a bio increments for it.
 */
struct vblk_disk *vblk_shim_disk_create(const struct vblk_disk_ops *ops, const void *ctx,
					unsigned int index, u64 sectors,
					struct queue_limits *lim, u32 pdu_size, int *err);
void vblk_shim_disk_destroy(struct vblk_disk *d);
u32 vblk_shim_disk_devt(const struct vblk_disk *d);
int vblk_shim_disk_openers(const struct vblk_disk *d);
int vblk_shim_disk_claim_for_removal(struct vblk_disk *d);
void vblk_shim_disk_set_capacity(struct vblk_disk *d, u64 sectors);
int vblk_shim_disk_set_limits(struct vblk_disk *d, const struct queue_limits *lim);
u32 vblk_shim_disk_logical_block_size(const struct vblk_disk *d);
void vblk_shim_disk_quiesce(struct vblk_disk *d);
void vblk_shim_disk_unquiesce(struct vblk_disk *d);
/* Waits until no request is in flight; -ERESTARTSYS on a signal. */
int vblk_shim_disk_wait_idle(struct vblk_disk *d);

/* What a request asks for. */
struct vblk_rq_info {
	enum vblk_op op;
	u32 flags;	/* enum vblk_rq_flag bits */
	u32 opf;	/* raw cmd_flags */
	u32 sectors;
	u64 pos;
};

void vblk_shim_rq_info(const struct request *rq, struct vblk_rq_info *info);
void *vblk_shim_rq_pdu(struct request *rq);
/* Zeroes sectors [skip, skip + len) of the request's data. */
void vblk_shim_rq_zero_range(struct request *rq, u64 skip, u64 len);
/*
 * Submits clones of sectors [skip, skip + len) of the request to f's
 * device at sector, each reporting tag to lower_done; returns how many.
 */
u32 vblk_shim_rq_clone(struct request *rq, u64 skip, u64 len, struct file *f,
		       u64 sector, u64 tag);
/*
 * For a discard or write-zeroes request: submits the same operation for
 * sectors [sector, sector + len) of f's device, reporting tag.
 */
void vblk_shim_rq_range(struct request *rq, struct file *f, u64 sector, u32 len, u64 tag);
/* Submits an empty cache flush to f's device, reporting tag to lower_done. */
void vblk_shim_rq_flush(struct request *rq, struct file *f, u64 tag);
void vblk_shim_rq_end(struct request *rq, u8 status);
/*
 * Copies len bytes at byte offset off of the request's data to buf
 * (to_rq false) or from buf into the request (to_rq true); the range is
 * clamped to the request. Any context.
 */
void vblk_shim_rq_copy(struct request *rq, u64 off, u8 *buf, u32 len, bool to_rq);
/* Runs ops->finish for rq on the disk's workqueue (any context). */
void vblk_shim_rq_defer(struct request *rq);
/*
 * Runs ops->queue_rq (in_worker = true) for a started request that was
 * not dispatched, on the disk's workqueue.
 */
void vblk_shim_rq_defer_map(struct request *rq);

/* ---- bounce pages (rust/sys/bounce.rs) ---- */

/*
 * A page reserve for writes that must not touch the caller's pages: at
 * least max_pages pages can always be had, however tight memory is.
 */
struct vblk_pool *vblk_shim_pool_new(u32 max_pages);
void vblk_shim_pool_free(struct vblk_pool *p);

/* Fills len bytes at buf, which hold the bytes at off of the piece. */
typedef void (*vblk_fill_fn)(void *ctx, u64 off, u8 *buf, u32 len);

/*
 * Writes sectors [skip, skip + len) of the request to f's device at sector
 * from pages of pool: each page first gets a copy of the request's data,
 * then fill(ctx, ...) may change it. The pages go back to the pool when
 * the bios complete; each completion reports tag. May sleep (waiting for
 * pool pages). Returns the number of bios submitted.
 */
u32 vblk_shim_rq_bounce_write(struct request *rq, struct vblk_pool *pool, u64 skip, u64 len,
			      struct file *f, u64 sector, u64 tag, vblk_fill_fn fill, void *ctx);

/*
 * Calls fn(ctx, off, buf, n) for bytes [off, off + len) of the request's
 * data, one single-page segment (mapped at buf) at a time; off counts from
 * the range's start. fn may change the bytes (for a read, that is what
 * the submitter gets). Process context.
 */
void vblk_shim_rq_visit(struct request *rq, u64 off, u64 len, vblk_fill_fn fn, void *ctx);

/* ---- symmetric ciphers (rust/sys/crypto.rs) ---- */

struct vblk_cipher;
struct skcipher_request;

/*
 * An skcipher by crypto API name (e.g. "xts(aes)") that does not allocate
 * memory per request, with a reserve of requests for it: NULL and *err on
 * failure. May sleep.
 */
struct vblk_cipher *vblk_shim_cipher_alloc(const char *name, int *err);
void vblk_shim_cipher_free(struct vblk_cipher *c);
int vblk_shim_cipher_setkey(struct vblk_cipher *c, const u8 *key, u32 len);
u32 vblk_shim_cipher_ivsize(struct vblk_cipher *c);
u32 vblk_shim_cipher_blocksize(struct vblk_cipher *c);
/* A request from the reserve (never NULL; may wait for one). Process context. */
struct skcipher_request *vblk_shim_cipher_req_get(struct vblk_cipher *c);
void vblk_shim_cipher_req_put(struct vblk_cipher *c, struct skcipher_request *req);
/*
 * Encrypts or decrypts len bytes at buf in place with iv (ivsize bytes,
 * changed), using req. buf must be in the kernel's linear map (-EFAULT
 * otherwise). Waits if the transform completes asynchronously (process
 * context only).
 */
int vblk_shim_cipher_crypt(struct vblk_cipher *c, struct skcipher_request *req, u8 *iv, u8 *buf,
			   u32 len, bool encrypt);

/* ---- target-owned workqueues, allocation scopes (rust/sys/workqueue.rs) ---- */

/* An unbound WQ_MEM_RECLAIM workqueue; NULL when out of memory. */
struct workqueue_struct *vblk_shim_wq_alloc(const char *name);
void vblk_shim_wq_flush(struct workqueue_struct *wq);
void vblk_shim_wq_destroy(struct workqueue_struct *wq);
/* memalloc_noio_save/restore: allocations in between never start I/O. */
unsigned int vblk_shim_noio_save(void);
void vblk_shim_noio_restore(unsigned int flags);

/* ---- time and randomness (rust/sys/mod.rs) ---- */

/* Milliseconds since boot (jiffies resolution). */
u64 vblk_shim_uptime_ms(void);
u64 vblk_shim_random_u64(void);

#endif /* VBLK_SHIM_H */
