# C declarations the compiled newc writer (wwfast/_cpio.pyx) calls: stat, open, read/write, readdir, and
# the error it raises from errno (the walk and the writer both do).
# Included into _cpio.pyx (one compiled module); not a module of its own.

cdef extern from "<sys/types.h>":
    ctypedef long off_t
    ctypedef long ssize_t
    ctypedef unsigned long dev_t
    ctypedef unsigned long ino_t
    ctypedef unsigned int mode_t

cdef extern from "<sys/sysmacros.h>" nogil:
    unsigned int c_major "major"(dev_t)
    unsigned int c_minor "minor"(dev_t)

cdef extern from "<sys/stat.h>" nogil:
    cdef struct timespec_t "timespec":
        long tv_sec
        long tv_nsec
    cdef struct stat_t "stat":
        dev_t st_dev
        ino_t st_ino
        mode_t st_mode
        unsigned long st_nlink
        unsigned int st_uid
        unsigned int st_gid
        dev_t st_rdev
        off_t st_size
        timespec_t st_mtim
    int fstatat(int, const char*, stat_t*, int)
    int fstat(int, stat_t*)
    bint S_ISREG(mode_t)
    bint S_ISDIR(mode_t)
    bint S_ISLNK(mode_t)

cdef extern from "<fcntl.h>" nogil:
    int openat(int, const char*, int, ...)
    int c_open "open"(const char*, int, ...)
    int O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC
    int AT_SYMLINK_NOFOLLOW

cdef extern from "<unistd.h>" nogil:
    ssize_t c_read "read"(int, void*, size_t)
    ssize_t c_write "write"(int, const void*, size_t)
    ssize_t readlinkat(int, const char*, char*, size_t)
    int c_close "close"(int)

cdef extern from *:
    """
    #include <errno.h>
    static void wwfast_clear_errno(void) { errno = 0; }
    """
    void clear_errno "wwfast_clear_errno"() nogil

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR
    cdef struct dirent:
        char d_name[256]
    DIR* fdopendir(int)
    dirent* readdir(DIR*)
    int closedir(DIR*)


cdef object os_error(path, what):
    cdef int err = errno
    return CpioError(f"{os.fsdecode(path)}: {what}: {os.strerror(err)}")
