// SPDX-License-Identifier: GPL-2.0
/*
 * C half of vblk's abstraction layer.
 *
 * It holds what is simplest and safest in C: static initialisers that name
 * THIS_MODULE and generic helpers (the control device's file_operations),
 * and static inline kernel helpers that Rust cannot call directly. Every
 * function here is a thin, logic-free wrapper; the Rust side (rust/sys)
 * documents the safety contract of each.
 */
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>

#include "shim.h"

/* Set before misc_register() publishes the device, constant afterwards. */
static vblk_control_fn vblk_control_handler;
static const void *vblk_control_ctx;

static long vblk_control_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return vblk_control_handler(vblk_control_ctx, cmd, arg);
}

static const struct file_operations vblk_control_fops = {
	.owner = THIS_MODULE,
	.open = nonseekable_open,
	.llseek = noop_llseek,
	.unlocked_ioctl = vblk_control_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/* /dev/vblk-control: root-only, like /dev/mapper/control. */
static struct miscdevice vblk_control_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vblk-control",
	.nodename = "vblk-control",
	.mode = 0600,
	.fops = &vblk_control_fops,
};

int vblk_shim_control_register(vblk_control_fn handler, const void *ctx)
{
	vblk_control_handler = handler;
	vblk_control_ctx = ctx;
	return misc_register(&vblk_control_misc);
}

void vblk_shim_control_deregister(void)
{
	misc_deregister(&vblk_control_misc);
}

bool vblk_shim_capable_sys_admin(void)
{
	return capable(CAP_SYS_ADMIN);
}

/* ---- events ---- */
#include <linux/wait_bit.h>

int vblk_shim_event_wait(u32 *counter, u32 seen)
{
	return wait_var_event_interruptible(counter, READ_ONCE(*counter) != seen);
}

void vblk_shim_event_wake(u32 *counter)
{
	wake_up_var(counter);
}

/* ---- lower block devices ---- */
#include <linux/blkdev.h>
#include <linux/bio.h>
#include <linux/blk-mq.h>
#include <linux/slab.h>

/*
 * One holder for every lower device vblk opens, like device-mapper's
 * _dm_claim_ptr: two vblk tables may share a lower device (and a reload
 * can open what the old table still holds), while everyone else who wants
 * the device exclusively (mkfs, mount, another driver) gets EBUSY.
 */
static char vblk_holder;

struct file *vblk_shim_bdev_open(const char *path, u32 dev, int *err)
{
	const blk_mode_t mode = BLK_OPEN_READ | BLK_OPEN_WRITE;
	struct file *f;

	if (path)
		f = bdev_file_open_by_path(path, mode, &vblk_holder, NULL);
	else
		f = bdev_file_open_by_dev(dev, mode, &vblk_holder, NULL);
	if (IS_ERR(f)) {
		*err = PTR_ERR(f);
		return NULL;
	}
	return f;
}

void vblk_shim_bdev_close(struct file *f)
{
	bdev_fput(f);
}

u32 vblk_shim_bdev_devt(struct file *f)
{
	return file_bdev(f)->bd_dev;
}

u64 vblk_shim_bdev_sectors(struct file *f)
{
	return bdev_nr_sectors(file_bdev(f));
}

u32 vblk_shim_bdev_logical_block_size(struct file *f)
{
	return bdev_logical_block_size(file_bdev(f));
}

bool vblk_shim_bdev_discard(struct file *f)
{
	return bdev_max_discard_sectors(file_bdev(f)) != 0;
}

bool vblk_shim_bdev_write_zeroes(struct file *f)
{
	return bdev_write_zeroes_sectors(file_bdev(f)) != 0;
}

void vblk_shim_bdev_name(struct file *f, char *buf, u32 len)
{
	snprintf(buf, len, "%pg", file_bdev(f));
}

int vblk_shim_bdev_flush(struct file *f)
{
	return blkdev_issue_flush(file_bdev(f));
}

/* ---- queue limits ---- */

struct queue_limits *vblk_shim_limits_new(void)
{
	struct queue_limits *lim = kmalloc(sizeof(*lim), GFP_KERNEL);

	if (lim)
		blk_set_stacking_limits(lim);
	return lim;
}

void vblk_shim_limits_free(struct queue_limits *lim)
{
	kfree(lim);
}

bool vblk_shim_limits_stack(struct queue_limits *lim, struct file *f, u64 offset)
{
	struct block_device *bdev = file_bdev(f);

	return blk_stack_limits(lim, &bdev_get_queue(bdev)->limits,
				get_start_sect(bdev) + offset) == 0;
}

void vblk_shim_limits_discard(struct queue_limits *lim, bool supported)
{
	if (!supported) {
		lim->max_hw_discard_sectors = 0;
		lim->discard_granularity = 0;
		lim->discard_alignment = 0;
	} else if (!lim->max_hw_discard_sectors) {
		/* Nothing below limits it (zero, error): any size, any sector. */
		lim->max_hw_discard_sectors = UINT_MAX;
		lim->discard_granularity = 512;
	}
	/* A request must cover one contiguous range (see rust/sys/disk.rs). */
	lim->max_discard_segments = 1;
}

void vblk_shim_limits_write_zeroes(struct queue_limits *lim, bool supported)
{
	if (!supported)
		lim->max_write_zeroes_sectors = 0;
}

u32 vblk_shim_limits_logical_block_size(const struct queue_limits *lim)
{
	return lim->logical_block_size;
}

/* ---- blk-mq disks ---- */

struct vblk_disk {
	struct blk_mq_tag_set set;
	struct gendisk *disk;
	/* Lower bios: clones of request bios and empty flushes. */
	struct bio_set bs;
	const struct vblk_disk_ops *ops;
	const void *ctx;
	/* Woken as requests end, for vblk_shim_disk_wait_idle. */
	wait_queue_head_t idle_wait;
	/* Set under disk->open_mutex once removal is decided: opens fail. */
	bool dying;
	/*
	 * The lock class of this disk's flush queue lock. A lower device
	 * (null_blk, another vblk disk, ...) completes our requests from
	 * inside its own flush completion, holding its own mq_flush_lock, and
	 * ending a request of our flush sequence takes ours: one class per
	 * disk keeps lockdep from taking that for recursion (nvme-loop does
	 * the same with one class; stacks of vblk disks need one each, and a
	 * class that dies with its disk leaves no stale ordering behind).
	 */
	struct lock_class_key fq_key;
};

/* What sits in front of every lower bio (the bio_set's front_pad). */
struct vblk_lower {
	struct request *rq;
	u64 tag;
	struct bio bio;
};

/*
 * The limits a table computed, as the disk gets them: blk-mq's own
 * features added, and no zoned-device limits (vblk disks are not zoned;
 * a table without lower devices would otherwise keep the stacking
 * default, which the block layer refuses).
 */
static struct queue_limits vblk_disk_limits(const struct queue_limits *lim)
{
	struct queue_limits l = *lim;

	l.features |= BLK_FEAT_IO_STAT | BLK_FEAT_NOWAIT;
	l.features &= ~(BLK_FEAT_ZONED | BLK_FEAT_POLL);
	l.max_zone_append_sectors = 0;
	l.max_open_zones = 0;
	l.max_active_zones = 0;
	l.zone_write_granularity = 0;
	return l;
}

static blk_status_t vblk_mq_queue_rq(struct blk_mq_hw_ctx *hctx,
				     const struct blk_mq_queue_data *bd)
{
	struct vblk_disk *d = hctx->queue->queuedata;
	struct blk_plug *outer = current->plug;
	struct blk_plug plug;

	blk_mq_start_request(bd->rq);
	/*
	 * queue_rq is often reached from the flush of the submitter's plug.
	 * Lower bios submitted now must not join that plug while blk-mq is
	 * walking it: set it aside and batch them in a plug of our own,
	 * flushed before we return.
	 */
	current->plug = NULL;
	blk_start_plug(&plug);
	d->ops->queue_rq(d->ctx, bd->rq);
	blk_finish_plug(&plug);
	current->plug = outer;
	return BLK_STS_OK;
}

static int vblk_mq_init_hctx(struct blk_mq_hw_ctx *hctx, void *data, unsigned int idx)
{
	struct vblk_disk *d = data;

	blk_mq_hctx_set_fq_lock_class(hctx, &d->fq_key);
	return 0;
}

static const struct blk_mq_ops vblk_mq_ops = {
	.queue_rq = vblk_mq_queue_rq,
	.init_hctx = vblk_mq_init_hctx,
};

/* Called with disk->open_mutex held, like the removal claim below. */
static int vblk_bdev_open(struct gendisk *disk, blk_mode_t mode)
{
	struct vblk_disk *d = disk->private_data;

	return d->dying ? -ENXIO : 0;
}

static const struct block_device_operations vblk_bdev_ops = {
	.owner = THIS_MODULE,
	.open = vblk_bdev_open,
};

struct vblk_disk *vblk_shim_disk_create(const struct vblk_disk_ops *ops, const void *ctx,
					unsigned int index, u64 sectors,
					struct queue_limits *lim, u32 pdu_size, int *err)
{
	struct queue_limits l = vblk_disk_limits(lim);
	struct vblk_disk *d;
	int ret;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d) {
		*err = -ENOMEM;
		return NULL;
	}
	d->ops = ops;
	d->ctx = ctx;
	init_waitqueue_head(&d->idle_wait);
	lockdep_register_key(&d->fq_key);
	ret = bioset_init(&d->bs, 64, offsetof(struct vblk_lower, bio), BIOSET_NEED_RESCUER);
	if (ret)
		goto free_d;

	d->set.ops = &vblk_mq_ops;
	d->set.driver_data = d;
	d->set.nr_hw_queues = 1;
	d->set.queue_depth = 128;
	d->set.numa_node = NUMA_NO_NODE;
	d->set.cmd_size = pdu_size;
	/* queue_rq sleeps: it allocates and submits lower bios. */
	d->set.flags = BLK_MQ_F_BLOCKING | BLK_MQ_F_STACKING;
	ret = blk_mq_alloc_tag_set(&d->set);
	if (ret)
		goto free_bs;

	d->disk = blk_mq_alloc_disk(&d->set, &l, d);
	if (IS_ERR(d->disk)) {
		ret = PTR_ERR(d->disk);
		goto free_set;
	}
	d->disk->fops = &vblk_bdev_ops;
	d->disk->private_data = d;
	d->disk->flags |= GENHD_FL_NO_PART;
	snprintf(d->disk->disk_name, DISK_NAME_LEN, "vblk%u", index);
	set_capacity(d->disk, sectors);
	ret = add_disk(d->disk);
	if (ret)
		goto put;
	return d;

put:
	put_disk(d->disk);
free_set:
	blk_mq_free_tag_set(&d->set);
free_bs:
	bioset_exit(&d->bs);
free_d:
	lockdep_unregister_key(&d->fq_key);
	kfree(d);
	*err = ret;
	return NULL;
}

void vblk_shim_disk_destroy(struct vblk_disk *d)
{
	/* Waits for every request, so every lower bio, to finish. */
	del_gendisk(d->disk);
	put_disk(d->disk);
	blk_mq_free_tag_set(&d->set);
	bioset_exit(&d->bs);
	/* No request is left to take the flush lock of this class. */
	lockdep_unregister_key(&d->fq_key);
	kfree(d);
}

u32 vblk_shim_disk_devt(const struct vblk_disk *d)
{
	return disk_devt(d->disk);
}

int vblk_shim_disk_openers(const struct vblk_disk *d)
{
	return atomic_read(&d->disk->part0->bd_openers);
}

/*
 * Decides removal atomically with respect to opens: -EBUSY if the disk is
 * open, else marks it dying so no open can succeed from now on.
 */
int vblk_shim_disk_claim_for_removal(struct vblk_disk *d)
{
	int ret = 0;

	mutex_lock(&d->disk->open_mutex);
	if (atomic_read(&d->disk->part0->bd_openers))
		ret = -EBUSY;
	else
		d->dying = true;
	mutex_unlock(&d->disk->open_mutex);
	return ret;
}

void vblk_shim_disk_set_capacity(struct vblk_disk *d, u64 sectors)
{
	set_capacity_and_notify(d->disk, sectors);
}

/* Call only with the queue quiesced and idle: no request may be in flight. */
int vblk_shim_disk_set_limits(struct vblk_disk *d, const struct queue_limits *lim)
{
	struct queue_limits l = vblk_disk_limits(lim);

	return queue_limits_set(d->disk->queue, &l);
}

u32 vblk_shim_disk_logical_block_size(const struct vblk_disk *d)
{
	return queue_logical_block_size(d->disk->queue);
}

/* Returns once no queue_rq runs; new requests wait in blk-mq (they do not fail). */
void vblk_shim_disk_quiesce(struct vblk_disk *d)
{
	blk_mq_quiesce_queue(d->disk->queue);
}

void vblk_shim_disk_unquiesce(struct vblk_disk *d)
{
	blk_mq_unquiesce_queue(d->disk->queue);
}

int vblk_shim_disk_wait_idle(struct vblk_disk *d)
{
	/*
	 * Requests wake us just before they end (see vblk_shim_rq_end), so
	 * look again every 10 ms rather than trusting the last wake-up.
	 */
	for (;;) {
		long ret = wait_event_interruptible_timeout(d->idle_wait,
					!blk_mq_queue_inflight(d->disk->queue),
					msecs_to_jiffies(10));
		if (ret < 0)
			return ret;
		if (ret > 0)
			return 0;
	}
}

/* ---- requests ---- */

enum vblk_op vblk_shim_rq_op(const struct request *rq)
{
	switch (req_op(rq)) {
	case REQ_OP_READ:
		return VBLK_OP_READ;
	case REQ_OP_WRITE:
		return VBLK_OP_WRITE;
	case REQ_OP_FLUSH:
		return VBLK_OP_FLUSH;
	case REQ_OP_DISCARD:
		return VBLK_OP_DISCARD;
	case REQ_OP_WRITE_ZEROES:
		return VBLK_OP_WRITE_ZEROES;
	default:
		return VBLK_OP_OTHER;
	}
}

u32 vblk_shim_rq_flags(const struct request *rq)
{
	u32 f = 0;

	if (rq->cmd_flags & REQ_FUA)
		f |= VBLK_RQ_FUA;
	if (rq->cmd_flags & REQ_PREFLUSH)
		f |= VBLK_RQ_PREFLUSH;
	if (rq->cmd_flags & REQ_SYNC)
		f |= VBLK_RQ_SYNC;
	if (rq->cmd_flags & REQ_RAHEAD)
		f |= VBLK_RQ_RAHEAD;
	return f;
}

u64 vblk_shim_rq_pos(const struct request *rq)
{
	return blk_rq_pos(rq);
}

u32 vblk_shim_rq_sectors(const struct request *rq)
{
	return blk_rq_sectors(rq);
}

void *vblk_shim_rq_pdu(struct request *rq)
{
	return blk_mq_rq_to_pdu(rq);
}

void vblk_shim_rq_zero_range(struct request *rq, u64 skip, u64 len)
{
	struct bio *bio;
	u64 pos = 0;

	__rq_for_each_bio(bio, rq) {
		u64 n = bio_sectors(bio), from, to;
		struct bvec_iter it, start;
		struct bio_vec bv;

		from = max(pos, skip);
		to = min(pos + n, skip + len);
		if (from < to && bio_has_data(bio)) {
			start = bio->bi_iter;
			bio_advance_iter(bio, &start, (from - pos) << SECTOR_SHIFT);
			start.bi_size = (to - from) << SECTOR_SHIFT;
			__bio_for_each_segment(bv, bio, it, start)
				memzero_bvec(&bv);
		}
		pos += n;
	}
}

static void vblk_lower_endio(struct bio *bio)
{
	struct vblk_lower *l = container_of(bio, struct vblk_lower, bio);
	struct request *rq = l->rq;
	struct vblk_disk *d = rq->q->queuedata;
	u64 tag = l->tag;
	blk_status_t status = bio->bi_status;

	bio_put(bio);
	d->ops->lower_done(rq, tag, (__force u8)status);
}

static void vblk_lower_submit(struct request *rq, struct bio *bio, u64 tag)
{
	struct vblk_lower *l = container_of(bio, struct vblk_lower, bio);

	l->rq = rq;
	l->tag = tag;
	bio->bi_end_io = vblk_lower_endio;
	/* The request is accepted: below it, vblk may wait (BLOCKING queue). */
	bio->bi_opf &= ~(REQ_NOWAIT | REQ_POLLED);
	/* Counted before submission: the bio may complete inside submit. */
	atomic_inc((atomic_t *)blk_mq_rq_to_pdu(rq));
	submit_bio_noacct(bio);
}

u32 vblk_shim_rq_clone(struct request *rq, u64 skip, u64 len, struct file *f,
		       u64 sector, u64 tag)
{
	struct vblk_disk *d = rq->q->queuedata;
	struct block_device *bdev = file_bdev(f);
	struct bio *bio;
	u64 pos = 0;
	u32 count = 0;

	__rq_for_each_bio(bio, rq) {
		u64 n = bio_sectors(bio), from, to;
		struct bio *clone;

		from = max(pos, skip);
		to = min(pos + n, skip + len);
		if (from < to) {
			/* GFP_NOIO from a mempool: waits, never fails. */
			clone = bio_alloc_clone(bdev, bio, GFP_NOIO, &d->bs);
			bio_trim(clone, from - pos, to - from);
			clone->bi_iter.bi_sector = sector + (from - skip);
			vblk_lower_submit(rq, clone, tag);
			count++;
		}
		pos += n;
		if (pos >= skip + len)
			break;
	}
	return count;
}

void vblk_shim_rq_flush(struct request *rq, struct file *f, u64 tag)
{
	struct vblk_disk *d = rq->q->queuedata;
	struct bio *bio;

	bio = bio_alloc_bioset(file_bdev(f), 0, REQ_OP_WRITE | REQ_PREFLUSH | REQ_SYNC,
			       GFP_NOIO, &d->bs);
	vblk_lower_submit(rq, bio, tag);
}

void vblk_shim_rq_end(struct request *rq, u8 status)
{
	struct vblk_disk *d = rq->q->queuedata;

	/*
	 * Wake the idle waiter before the end it waits for: once the request
	 * has ended, the disk may be deleted and d freed. The waiter looks
	 * again within 10 ms.
	 */
	if (wq_has_sleeper(&d->idle_wait))
		wake_up(&d->idle_wait);
	blk_mq_end_request(rq, (__force blk_status_t)status);
}
