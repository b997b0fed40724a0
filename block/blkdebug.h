/*
 * block/blkdebug.h — error injection for a block backend (like QEMU's
 * blkdebug filter): chosen requests fail with a chosen errno and/or are
 * delayed, so every layer above can test its error paths on real files.
 *
 * Rules come from the backend option inject=RULE (repeatable; "file=x.img,
 * inject=read:EIO:once,inject=write:ENOSPC:req=5"), from keel_blk_inject(),
 * or from keel-img's and keel-vmm's command lines.  Several rules may be
 * given in one string separated by ';'.  A rule is colon-separated:
 *
 *   EVENT:ITEM[:ITEM...]
 *
 *   EVENT     read | write | flush | discard | zeroes | any
 *             (also accepted as "event=read")
 *   ITEM      an action or a condition, in any order:
 *     EIO, ENOSPC, EROFS, EPERM, EINVAL, ENOMEM, EDQUOT, ENOTSUP, ...
 *               or a number: fail the request with this errno (errno=EIO
 *               is the same).  The request is not performed at all.
 *     delay=MS  wait MS milliseconds before the request goes on (delay_ms=
 *               is the same); with an errno, the failure comes after it.
 *     offset=START[-END]
 *               only requests overlapping bytes [START, END) (END
 *               exclusive; without it, the single byte START).  Numbers
 *               take k/m/g suffixes (powers of 1024).  Flush never matches
 *               a rule with a range.
 *     sector=N  the same as offset=N*512-(N+1)*512
 *     req=N     only the N-th request the backend receives (1-based; every
 *               request type counts, see keel_blk_get_request_count())
 *     once      fire at most once, then the rule is spent (once=on)
 *   A rule needs an errno or a delay.
 *
 * Example: "read:EIO:offset=0-4096:once" fails the first read that touches
 * the first 4 KiB with -EIO; "any:delay=50" delays every request by 50 ms.
 *
 * Matching: the rules are checked in the order given, each request against
 * every live rule; every matching delay is applied, and the first matching
 * errno fails the request.  A failed request is reported to its caller once
 * and has no effect on the file; other requests are untouched.
 *
 * Thread rules: rules may be added from any thread at any time (also while
 * requests flow); they are checked by each request in the thread that runs
 * it (the home thread, or an attached context's thread), under a lock, so
 * a "once" rule fails exactly one request and req=N matches the N-th
 * request counted over all threads.
 */
#ifndef KEEL_BLOCK_BLKDEBUG_H
#define KEEL_BLOCK_BLKDEBUG_H

#include "block/block-int.h"

#endif
