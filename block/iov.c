/*
 * iovec helpers for the block layer.
 */
#include "config.h"

#include "block/block-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Walk @iov from byte @skip for @bytes, running BODY on each contiguous
 * piece (piece_, n_ bytes) with its position in the flat buffer (pos_). */
#define IOV_FOR_EACH_PIECE(iov, iovcnt, skip, bytes, BODY)                   \
    do {                                                                     \
        int64_t skip_ = (skip), left_ = (bytes), pos_ = 0;                   \
        for (int i_ = 0; i_ < (iovcnt) && left_ > 0; i_++) {                  \
            int64_t len_ = (int64_t)(iov)[i_].iov_len;                       \
            if (skip_ >= len_) {                                             \
                skip_ -= len_;                                               \
                continue;                                                    \
            }                                                                \
            int64_t n_ = len_ - skip_ < left_ ? len_ - skip_ : left_;         \
            char *piece_ = (char *)(iov)[i_].iov_base + skip_;                \
            BODY;                                                            \
            pos_ += n_;                                                      \
            left_ -= n_;                                                     \
            skip_ = 0;                                                       \
        }                                                                    \
    } while (0)

void iov_to_buf(const struct iovec *iov, int iovcnt, int64_t skip, void *buf, int64_t bytes)
{
    IOV_FOR_EACH_PIECE(iov, iovcnt, skip, bytes,
                       memcpy((char *)buf + pos_, piece_, (size_t)n_));
}

void iov_from_buf(const struct iovec *iov, int iovcnt, int64_t skip, const void *buf,
                  int64_t bytes)
{
    IOV_FOR_EACH_PIECE(iov, iovcnt, skip, bytes,
                       memcpy(piece_, (const char *)buf + pos_, (size_t)n_));
}

void iov_memset(const struct iovec *iov, int iovcnt, int64_t skip, int c, int64_t bytes)
{
    IOV_FOR_EACH_PIECE(iov, iovcnt, skip, bytes,
                       ((void)pos_, memset(piece_, c, (size_t)n_)));
}

int iov_slice(const struct iovec *iov, int iovcnt, int64_t skip, int64_t bytes,
              struct iovec *out, int max, int64_t *taken)
{
    int n = 0;
    int64_t total = 0;

    for (int i = 0; i < iovcnt && bytes > 0 && n < max; i++) {
        int64_t len = (int64_t)iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        int64_t piece = len - skip < bytes ? len - skip : bytes;
        out[n].iov_base = (char *)iov[i].iov_base + skip;
        out[n].iov_len = (size_t)piece;
        n++;
        total += piece;
        bytes -= piece;
        skip = 0;
    }
    *taken = total;
    return n;
}

void *block_memalign(size_t align, size_t size)
{
    void *p = NULL;

    if (align < sizeof(void *)) {
        align = sizeof(void *);
    }
    if (posix_memalign(&p, align, size ? size : 1)) {
        fprintf(stderr, "keel: out of memory allocating %zu bytes\n", size);
        abort();
    }
    return p;
}
