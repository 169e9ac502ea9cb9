# The tree walk of the compiled newc writer (wwfast/_cpio.pyx): entries in C arrays, in the order and
# with the rules of the pure twin's walk (wwfast/_cpio_walk.py), and the hard-link plan. Included into
# _cpio.pyx (one compiled module, after _cpio_sys.pxi); not a module of its own.

cdef struct Entry:
    size_t name_off     # into the names arena (NUL-terminated, root-relative)
    uint32_t name_len
    uint32_t mode
    uint32_t uid
    uint32_t gid
    uint64_t nlink
    int64_t mtime
    uint64_t size
    uint64_t dev
    uint64_t ino
    uint64_t rdev
    # hard links: index of the group's first entry, group size (0 = not linked), data carrier?
    size_t link_first
    uint32_t link_count
    bint link_last
    # the plan: header fields as written
    uint64_t out_ino
    uint64_t out_nlink
    uint64_t out_size
    uint64_t out_mtime
    size_t target_off   # symlink target, in the targets arena
    uint32_t target_len


cdef struct Tree:
    Entry* entries
    size_t count
    size_t cap
    char* names
    size_t names_len
    size_t names_cap
    char* targets
    size_t targets_len
    size_t targets_cap


cdef int tree_push(Tree* t, const char* rel, size_t rel_len, stat_t* st) except -1:
    cdef size_t need
    cdef Entry* e
    if t.count == t.cap:
        t.cap = t.cap * 2 if t.cap else 1024
        e = <Entry*>realloc(t.entries, t.cap * sizeof(Entry))
        if e == NULL:
            raise MemoryError()
        t.entries = e
    need = t.names_len + rel_len + 1
    if need > t.names_cap:
        while need > t.names_cap:
            t.names_cap = t.names_cap * 2 if t.names_cap else (1 << 20)
        t.names = <char*>realloc(t.names, t.names_cap)
        if t.names == NULL:
            raise MemoryError()
    e = &t.entries[t.count]
    memset(e, 0, sizeof(Entry))
    e.name_off = t.names_len
    e.name_len = <uint32_t>rel_len
    memcpy(t.names + t.names_len, rel, rel_len)
    t.names[t.names_len + rel_len] = 0
    t.names_len = need
    e.mode = st.st_mode
    e.uid = st.st_uid
    e.gid = st.st_gid
    e.nlink = st.st_nlink
    e.mtime = st.st_mtim.tv_sec
    e.size = st.st_size
    e.dev = st.st_dev
    e.ino = st.st_ino
    e.rdev = st.st_rdev
    t.count += 1
    return 0


cdef void tree_free(Tree* t) noexcept:
    free(t.entries)
    free(t.names)
    free(t.targets)
    t.entries = NULL
    t.names = NULL
    t.targets = NULL
    t.count = t.cap = t.names_len = t.names_cap = t.targets_len = t.targets_cap = 0


cdef int tree_add_target(Tree* t, Entry* e, const char* target, size_t n) except -1:
    cdef char* grown
    while t.targets_len + n > t.targets_cap:
        t.targets_cap = t.targets_cap * 2 if t.targets_cap else (1 << 16)
        grown = <char*>realloc(t.targets, t.targets_cap)
        if grown == NULL:
            raise MemoryError()
        t.targets = grown
    memcpy(t.targets + t.targets_len, target, n)
    e.target_off = t.targets_len
    e.target_len = <uint32_t>n
    t.targets_len += n
    return 0


cdef int cmp_names(const void* a, const void* b) noexcept nogil:
    return strcmp((<const char**>a)[0], (<const char**>b)[0])


cdef class _Walker:
    """Pre-order, sorted walk of one tree into a Tree (same rules as _cpio_walk.scan_tree)."""
    cdef Tree* tree
    cdef object matcher
    cdef bint use_matcher
    cdef bint one_fs
    cdef uint64_t root_dev
    cdef bytes root

    cdef int walk_dir(self, int dirfd, bytes prefix) except -1:
        """List `dirfd` (consumed: closed here), sort, push entries, recurse into subdirectories."""
        cdef DIR* d = fdopendir(dirfd)
        cdef dirent* ent
        cdef char** names = NULL
        cdef size_t n = 0, cap = 0, i
        cdef char** grown
        cdef char* copy
        cdef size_t ln
        cdef stat_t st
        cdef int subfd
        cdef bytes rel
        if d == NULL:
            err = os_error(self.root + b"/" + prefix, "cannot list directory")
            c_close(dirfd)
            raise err
        try:
            while True:
                clear_errno()
                ent = readdir(d)
                if ent == NULL:
                    if errno != 0:
                        raise os_error(self.root + b"/" + prefix, "cannot list directory")
                    break
                if ent.d_name[0] == b'.' and (ent.d_name[1] == 0 or (ent.d_name[1] == b'.' and ent.d_name[2] == 0)):
                    continue
                if n == cap:
                    cap = cap * 2 if cap else 64
                    grown = <char**>realloc(names, cap * sizeof(char*))
                    if grown == NULL:
                        raise MemoryError()
                    names = grown
                ln = strlen(ent.d_name)
                copy = <char*>malloc(ln + 1)
                if copy == NULL:
                    raise MemoryError()
                memcpy(copy, ent.d_name, ln + 1)
                names[n] = copy
                n += 1
            qsort(names, n, sizeof(char*), cmp_names)
            for i in range(n):
                rel = prefix + names[i]
                if self.use_matcher and self.matcher.match(rel):
                    continue
                if fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0:
                    raise os_error(self.root + b"/" + rel, "cannot stat")
                if self.one_fs and st.st_dev != self.root_dev:
                    if S_ISDIR(st.st_mode):
                        tree_push(self.tree, rel, len(rel), &st)   # the mount point itself, kept empty
                    continue
                if S_ISREG(st.st_mode) and <uint64_t>st.st_size > <uint64_t>0xFFFFFFFF:
                    raise FileTooLarge(self.root + b"/" + rel, st.st_size)
                tree_push(self.tree, rel, len(rel), &st)
                if S_ISDIR(st.st_mode):
                    subfd = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    if subfd < 0:
                        raise os_error(self.root + b"/" + rel, "cannot list directory")
                    self.walk_dir(subfd, rel + b"/")
        finally:
            for i in range(n):
                free(names[i])
            free(names)
            closedir(d)
        return 0


cdef int cmp_links(const void* a, const void* b) noexcept nogil:
    # Sort (dev, ino, index) triples; the index keeps archive order inside a group.
    cdef const uint64_t* x = <const uint64_t*>a
    cdef const uint64_t* y = <const uint64_t*>b
    cdef int k
    for k in range(3):
        if x[k] != y[k]:
            return -1 if x[k] < y[k] else 1
    return 0


cdef int plan_links(Tree* t) except -1:
    """Mark hard-linked regular files: group size, first index, and the last link (data carrier)."""
    cdef size_t i, j, k, n = 0
    cdef uint64_t* keys
    cdef Entry* e
    for i in range(t.count):
        e = &t.entries[i]
        if S_ISREG(e.mode) and e.nlink > 1:
            n += 1
    if n < 2:
        return 0
    keys = <uint64_t*>malloc(n * 3 * sizeof(uint64_t))
    if keys == NULL:
        raise MemoryError()
    j = 0
    for i in range(t.count):
        e = &t.entries[i]
        if S_ISREG(e.mode) and e.nlink > 1:
            keys[3 * j] = e.dev
            keys[3 * j + 1] = e.ino
            keys[3 * j + 2] = i
            j += 1
    qsort(keys, n, 3 * sizeof(uint64_t), cmp_links)
    i = 0
    while i < n:
        j = i + 1
        while j < n and keys[3 * j] == keys[3 * i] and keys[3 * j + 1] == keys[3 * i + 1]:
            j += 1
        if j - i > 1:
            for k in range(i, j):
                e = &t.entries[keys[3 * k + 2]]
                e.link_first = keys[3 * i + 2]
                e.link_count = <uint32_t>(j - i)
                e.link_last = (k == j - 1)
        i = j
    free(keys)
    return 0
