// SPDX-License-Identifier: GPL-2.0
//! Raw C declarations produced by the module-local bindgen run over
//! `bindings.h` (see `Kbuild`). Private to the abstraction layer.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn,
    improper_ctypes
)]

// The kernel's bindgen parameters (which the run reuses) leave these to
// the Rust side, as the kernel crate's `bindings` does.
type __kernel_size_t = usize;
type __kernel_ssize_t = isize;
type __kernel_ptrdiff_t = isize;

include!("bindings_generated.rs");

// Fails the build if bindgen laid out a struct rust/sys uses differently
// from the C compiler (see `bindings.h`).
const _: () = assert!(core::mem::offset_of!(request, q) == VBLK_OFF_request_q as usize);
const _: () =
    assert!(core::mem::offset_of!(request, cmd_flags) == VBLK_OFF_request_cmd_flags as usize);
const _: () =
    assert!(core::mem::offset_of!(request, __data_len) == VBLK_OFF_request___data_len as usize);
const _: () =
    assert!(core::mem::offset_of!(request, __sector) == VBLK_OFF_request___sector as usize);
const _: () = assert!(core::mem::offset_of!(request, bio) == VBLK_OFF_request_bio as usize);
const _: () = assert!(
    core::mem::offset_of!(request_queue, queuedata) == VBLK_OFF_request_queue_queuedata as usize
);
const _: () =
    assert!(core::mem::offset_of!(request_queue, limits) == VBLK_OFF_request_queue_limits as usize);
const _: () = assert!(core::mem::offset_of!(bio, bi_next) == VBLK_OFF_bio_bi_next as usize);
const _: () = assert!(core::mem::offset_of!(bio, bi_opf) == VBLK_OFF_bio_bi_opf as usize);
const _: () = assert!(core::mem::offset_of!(bio, bi_status) == VBLK_OFF_bio_bi_status as usize);
const _: () = assert!(core::mem::offset_of!(bio, bi_iter) == VBLK_OFF_bio_bi_iter as usize);
const _: () = assert!(core::mem::offset_of!(bio, bi_end_io) == VBLK_OFF_bio_bi_end_io as usize);
const _: () = assert!(core::mem::offset_of!(bio, bi_vcnt) == VBLK_OFF_bio_bi_vcnt as usize);
const _: () = assert!(core::mem::offset_of!(bio, bi_io_vec) == VBLK_OFF_bio_bi_io_vec as usize);
const _: () = assert!(core::mem::offset_of!(bio_vec, bv_page) == VBLK_OFF_bio_vec_bv_page as usize);
const _: () = assert!(core::mem::offset_of!(bio_vec, bv_len) == VBLK_OFF_bio_vec_bv_len as usize);
const _: () =
    assert!(core::mem::offset_of!(bio_vec, bv_offset) == VBLK_OFF_bio_vec_bv_offset as usize);
const _: () =
    assert!(core::mem::offset_of!(bvec_iter, bi_sector) == VBLK_OFF_bvec_iter_bi_sector as usize);
const _: () =
    assert!(core::mem::offset_of!(bvec_iter, bi_size) == VBLK_OFF_bvec_iter_bi_size as usize);
const _: () =
    assert!(core::mem::offset_of!(bvec_iter, bi_idx) == VBLK_OFF_bvec_iter_bi_idx as usize);
const _: () = assert!(
    core::mem::offset_of!(bvec_iter, bi_bvec_done) == VBLK_OFF_bvec_iter_bi_bvec_done as usize
);
const _: () = assert!(core::mem::offset_of!(gendisk, major) == VBLK_OFF_gendisk_major as usize);
const _: () =
    assert!(core::mem::offset_of!(gendisk, first_minor) == VBLK_OFF_gendisk_first_minor as usize);
const _: () =
    assert!(core::mem::offset_of!(gendisk, disk_name) == VBLK_OFF_gendisk_disk_name as usize);
const _: () = assert!(core::mem::offset_of!(gendisk, fops) == VBLK_OFF_gendisk_fops as usize);
const _: () = assert!(core::mem::offset_of!(gendisk, queue) == VBLK_OFF_gendisk_queue as usize);
const _: () =
    assert!(core::mem::offset_of!(gendisk, private_data) == VBLK_OFF_gendisk_private_data as usize);
const _: () = assert!(core::mem::offset_of!(gendisk, flags) == VBLK_OFF_gendisk_flags as usize);
const _: () =
    assert!(core::mem::offset_of!(gendisk, open_mutex) == VBLK_OFF_gendisk_open_mutex as usize);
const _: () = assert!(
    core::mem::offset_of!(block_device, bd_start_sect)
        == VBLK_OFF_block_device_bd_start_sect as usize
);
const _: () =
    assert!(core::mem::offset_of!(block_device, bd_dev) == VBLK_OFF_block_device_bd_dev as usize);
const _: () =
    assert!(core::mem::offset_of!(block_device, bd_disk) == VBLK_OFF_block_device_bd_disk as usize);
const _: () = assert!(
    core::mem::offset_of!(block_device, bd_queue) == VBLK_OFF_block_device_bd_queue as usize
);
const _: () =
    assert!(core::mem::offset_of!(blk_mq_tag_set, ops) == VBLK_OFF_blk_mq_tag_set_ops as usize);
const _: () = assert!(
    core::mem::offset_of!(blk_mq_tag_set, nr_hw_queues)
        == VBLK_OFF_blk_mq_tag_set_nr_hw_queues as usize
);
const _: () = assert!(
    core::mem::offset_of!(blk_mq_tag_set, queue_depth)
        == VBLK_OFF_blk_mq_tag_set_queue_depth as usize
);
const _: () = assert!(
    core::mem::offset_of!(blk_mq_tag_set, cmd_size) == VBLK_OFF_blk_mq_tag_set_cmd_size as usize
);
const _: () = assert!(
    core::mem::offset_of!(blk_mq_tag_set, numa_node) == VBLK_OFF_blk_mq_tag_set_numa_node as usize
);
const _: () =
    assert!(core::mem::offset_of!(blk_mq_tag_set, flags) == VBLK_OFF_blk_mq_tag_set_flags as usize);
const _: () = assert!(
    core::mem::offset_of!(blk_mq_tag_set, driver_data)
        == VBLK_OFF_blk_mq_tag_set_driver_data as usize
);
const _: () =
    assert!(core::mem::offset_of!(blk_mq_queue_data, rq) == VBLK_OFF_blk_mq_queue_data_rq as usize);
const _: () =
    assert!(core::mem::offset_of!(blk_mq_ops, queue_rq) == VBLK_OFF_blk_mq_ops_queue_rq as usize);
const _: () =
    assert!(core::mem::offset_of!(blk_mq_ops, queue_rqs) == VBLK_OFF_blk_mq_ops_queue_rqs as usize);
const _: () =
    assert!(core::mem::offset_of!(blk_mq_ops, init_hctx) == VBLK_OFF_blk_mq_ops_init_hctx as usize);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, features) == VBLK_OFF_queue_limits_features as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_hw_sectors)
        == VBLK_OFF_queue_limits_max_hw_sectors as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_sectors) == VBLK_OFF_queue_limits_max_sectors as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_user_sectors)
        == VBLK_OFF_queue_limits_max_user_sectors as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_segments)
        == VBLK_OFF_queue_limits_max_segments as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_segment_size)
        == VBLK_OFF_queue_limits_max_segment_size as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, virt_boundary_mask)
        == VBLK_OFF_queue_limits_virt_boundary_mask as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, seg_boundary_mask)
        == VBLK_OFF_queue_limits_seg_boundary_mask as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_zone_append_sectors)
        == VBLK_OFF_queue_limits_max_zone_append_sectors as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_open_zones)
        == VBLK_OFF_queue_limits_max_open_zones as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_active_zones)
        == VBLK_OFF_queue_limits_max_active_zones as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, zone_write_granularity)
        == VBLK_OFF_queue_limits_zone_write_granularity as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_hw_discard_sectors)
        == VBLK_OFF_queue_limits_max_hw_discard_sectors as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, discard_granularity)
        == VBLK_OFF_queue_limits_discard_granularity as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, discard_alignment)
        == VBLK_OFF_queue_limits_discard_alignment as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_discard_segments)
        == VBLK_OFF_queue_limits_max_discard_segments as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, max_write_zeroes_sectors)
        == VBLK_OFF_queue_limits_max_write_zeroes_sectors as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, logical_block_size)
        == VBLK_OFF_queue_limits_logical_block_size as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, physical_block_size)
        == VBLK_OFF_queue_limits_physical_block_size as usize
);
const _: () =
    assert!(core::mem::offset_of!(queue_limits, io_min) == VBLK_OFF_queue_limits_io_min as usize);
const _: () =
    assert!(core::mem::offset_of!(queue_limits, io_opt) == VBLK_OFF_queue_limits_io_opt as usize);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, chunk_sectors)
        == VBLK_OFF_queue_limits_chunk_sectors as usize
);
const _: () = assert!(
    core::mem::offset_of!(queue_limits, dma_alignment)
        == VBLK_OFF_queue_limits_dma_alignment as usize
);
const _: () = assert!(
    core::mem::offset_of!(block_device_operations, open)
        == VBLK_OFF_block_device_operations_open as usize
);
const _: () = assert!(
    core::mem::offset_of!(block_device_operations, owner)
        == VBLK_OFF_block_device_operations_owner as usize
);
const _: () = assert!(
    core::mem::offset_of!(file_operations, owner) == VBLK_OFF_file_operations_owner as usize
);
const _: () = assert!(
    core::mem::offset_of!(file_operations, llseek) == VBLK_OFF_file_operations_llseek as usize
);
const _: () = assert!(
    core::mem::offset_of!(file_operations, unlocked_ioctl)
        == VBLK_OFF_file_operations_unlocked_ioctl as usize
);
const _: () = assert!(
    core::mem::offset_of!(file_operations, compat_ioctl)
        == VBLK_OFF_file_operations_compat_ioctl as usize
);
const _: () =
    assert!(core::mem::offset_of!(file_operations, open) == VBLK_OFF_file_operations_open as usize);
const _: () =
    assert!(core::mem::offset_of!(file, private_data) == VBLK_OFF_file_private_data as usize);
const _: () =
    assert!(core::mem::offset_of!(miscdevice, minor) == VBLK_OFF_miscdevice_minor as usize);
const _: () = assert!(core::mem::offset_of!(miscdevice, name) == VBLK_OFF_miscdevice_name as usize);
const _: () = assert!(core::mem::offset_of!(miscdevice, fops) == VBLK_OFF_miscdevice_fops as usize);
const _: () =
    assert!(core::mem::offset_of!(miscdevice, nodename) == VBLK_OFF_miscdevice_nodename as usize);
const _: () = assert!(core::mem::offset_of!(miscdevice, mode) == VBLK_OFF_miscdevice_mode as usize);
const _: () = assert!(
    core::mem::offset_of!(skcipher_request, cryptlen)
        == VBLK_OFF_skcipher_request_cryptlen as usize
);
const _: () =
    assert!(core::mem::offset_of!(skcipher_request, iv) == VBLK_OFF_skcipher_request_iv as usize);
const _: () =
    assert!(core::mem::offset_of!(skcipher_request, src) == VBLK_OFF_skcipher_request_src as usize);
const _: () =
    assert!(core::mem::offset_of!(skcipher_request, dst) == VBLK_OFF_skcipher_request_dst as usize);
const _: () = assert!(
    core::mem::offset_of!(skcipher_request, base) == VBLK_OFF_skcipher_request_base as usize
);
const _: () = assert!(
    core::mem::offset_of!(crypto_async_request, complete)
        == VBLK_OFF_crypto_async_request_complete as usize
);
const _: () = assert!(
    core::mem::offset_of!(crypto_async_request, data)
        == VBLK_OFF_crypto_async_request_data as usize
);
const _: () = assert!(
    core::mem::offset_of!(crypto_async_request, tfm) == VBLK_OFF_crypto_async_request_tfm as usize
);
const _: () = assert!(
    core::mem::offset_of!(crypto_async_request, flags)
        == VBLK_OFF_crypto_async_request_flags as usize
);
const _: () =
    assert!(core::mem::offset_of!(crypto_skcipher, base) == VBLK_OFF_crypto_skcipher_base as usize);
const _: () = assert!(
    core::mem::offset_of!(crypto_wait, completion) == VBLK_OFF_crypto_wait_completion as usize
);
const _: () = assert!(core::mem::offset_of!(crypto_wait, err) == VBLK_OFF_crypto_wait_err as usize);
const _: () = assert!(core::mem::size_of::<request>() == VBLK_SIZE_request as usize);
const _: () = assert!(core::mem::size_of::<request_queue>() == VBLK_SIZE_request_queue as usize);
const _: () = assert!(core::mem::size_of::<bio>() == VBLK_SIZE_bio as usize);
const _: () = assert!(core::mem::size_of::<bio_vec>() == VBLK_SIZE_bio_vec as usize);
const _: () = assert!(core::mem::size_of::<bvec_iter>() == VBLK_SIZE_bvec_iter as usize);
const _: () = assert!(core::mem::size_of::<gendisk>() == VBLK_SIZE_gendisk as usize);
const _: () = assert!(core::mem::size_of::<block_device>() == VBLK_SIZE_block_device as usize);
const _: () = assert!(core::mem::size_of::<blk_mq_tag_set>() == VBLK_SIZE_blk_mq_tag_set as usize);
const _: () =
    assert!(core::mem::size_of::<blk_mq_queue_data>() == VBLK_SIZE_blk_mq_queue_data as usize);
const _: () = assert!(core::mem::size_of::<blk_mq_ops>() == VBLK_SIZE_blk_mq_ops as usize);
const _: () = assert!(core::mem::size_of::<queue_limits>() == VBLK_SIZE_queue_limits as usize);
const _: () = assert!(
    core::mem::size_of::<block_device_operations>() == VBLK_SIZE_block_device_operations as usize
);
const _: () =
    assert!(core::mem::size_of::<file_operations>() == VBLK_SIZE_file_operations as usize);
const _: () = assert!(core::mem::size_of::<file>() == VBLK_SIZE_file as usize);
const _: () = assert!(core::mem::size_of::<miscdevice>() == VBLK_SIZE_miscdevice as usize);
const _: () =
    assert!(core::mem::size_of::<skcipher_request>() == VBLK_SIZE_skcipher_request as usize);
const _: () = assert!(
    core::mem::size_of::<crypto_async_request>() == VBLK_SIZE_crypto_async_request as usize
);
const _: () =
    assert!(core::mem::size_of::<crypto_skcipher>() == VBLK_SIZE_crypto_skcipher as usize);
const _: () = assert!(core::mem::size_of::<crypto_wait>() == VBLK_SIZE_crypto_wait as usize);
const _: () = assert!(core::mem::size_of::<bio_set>() == VBLK_SIZE_bio_set as usize);
const _: () = assert!(core::mem::size_of::<lock_class_key>() == VBLK_SIZE_lock_class_key as usize);
const _: () = assert!(core::mem::size_of::<work_struct>() == VBLK_SIZE_work_struct as usize);
const _: () = assert!(core::mem::size_of::<blk_plug>() == VBLK_SIZE_blk_plug as usize);
const _: () = assert!(core::mem::size_of::<scatterlist>() == VBLK_SIZE_scatterlist as usize);
const _: () = assert!(core::mem::size_of::<completion>() == VBLK_SIZE_completion as usize);
const _: () = assert!(core::mem::size_of::<rq_list>() == VBLK_SIZE_rq_list as usize);
