package kv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/sealkv/kv"
)

// A store is a directory and a set of Keys. Put streams any reader; Get
// returns a verified io.ReadSeekCloser.
func Example() {
	dir, _ := os.MkdirTemp("", "sealkv-example")
	defer os.RemoveAll(dir)
	keys, err := kv.GenerateKeys()
	if err != nil {
		log.Fatal(err)
	}
	db, err := kv.Open(dir, &kv.Options{Keys: keys})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	ctx := context.Background()
	d, err := db.Put(ctx, "greeting", strings.NewReader("hello, sealed world"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("version", d.Content.Version, "size", d.Content.OriginalSize)

	r, err := db.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	fmt.Println(string(b))
	// Output:
	// version 1 size 19
	// hello, sealed world
}

// New content under the same key becomes a new version; older versions stay
// readable until pruned, and Delete refuses while they exist.
func ExampleDB_PruneVersions() {
	dir, _ := os.MkdirTemp("", "sealkv-example")
	defer os.RemoveAll(dir)
	keys, _ := kv.GenerateKeys()
	db, _ := kv.Open(dir, &kv.Options{Keys: keys})
	defer db.Close()
	ctx := context.Background()

	db.Put(ctx, "doc", strings.NewReader("first draft"))
	d, _ := db.Put(ctx, "doc", strings.NewReader("second draft"))
	fmt.Println("current", d.Content.Version, "older", len(d.Versions))

	_, err := db.Delete(ctx, "doc")
	fmt.Println(errors.Is(err, kv.ErrHasVersions))

	db.PruneVersions(ctx, "doc", 0)
	rep, err := db.Delete(ctx, "doc")
	fmt.Println(err, len(rep.Deleted), "slice deleted")
	// Output:
	// current 2 older 1
	// true
	// <nil> 1 slice deleted
}

// Children are Data whose parent is another Data; a parent cannot be
// deleted while it has children.
func ExampleDB_Children() {
	dir, _ := os.MkdirTemp("", "sealkv-example")
	defer os.RemoveAll(dir)
	keys, _ := kv.GenerateKeys()
	db, _ := kv.Open(dir, &kv.Options{Keys: keys})
	defer db.Close()
	ctx := context.Background()

	db.Put(ctx, "photos", strings.NewReader(""))
	db.Put(ctx, "photos/2026/cat.jpg", strings.NewReader("meow"), kv.WithParent("photos"))
	db.Put(ctx, "photos/2026/dog.jpg", strings.NewReader("woof"), kv.WithParent("photos"))
	for key, err := range db.Children(ctx, "photos") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(key)
	}
	_, err := db.Delete(ctx, "photos")
	fmt.Println(errors.Is(err, kv.ErrHasChildren))
	// Output:
	// photos/2026/cat.jpg
	// photos/2026/dog.jpg
	// true
}

// Write-only keys can store (and deduplicate) but never read back: give
// them to the machines that only ingest.
func ExampleKeys_WriteOnly() {
	dir, _ := os.MkdirTemp("", "sealkv-example")
	defer os.RemoveAll(dir)
	keys, _ := kv.GenerateKeys()
	b, _ := keys.WriteOnly().MarshalBinary()
	ingestKeys, _ := kv.ParseKeys(b)

	db, _ := kv.Open(dir, &kv.Options{Keys: ingestKeys})
	ctx := context.Background()
	db.Put(ctx, "log", strings.NewReader("line 1"))
	_, err := db.Get(ctx, "log")
	fmt.Println(errors.Is(err, kv.ErrWriteOnly))
	db.Close()

	db, _ = kv.Open(dir, &kv.Options{Keys: keys})
	defer db.Close()
	r, _ := db.Get(ctx, "log")
	defer r.Close()
	got, _ := io.ReadAll(r)
	fmt.Println(string(got))
	// Output:
	// true
	// line 1
}

// A Batch makes many Puts visible and durable in one commit, with one sync
// for all of them: the way to store many small objects, or a tree that
// must appear whole.
func ExampleBatch() {
	dir, _ := os.MkdirTemp("", "sealkv-example")
	defer os.RemoveAll(dir)
	keys, _ := kv.GenerateKeys()
	db, _ := kv.Open(dir, &kv.Options{Keys: keys})
	defer db.Close()
	ctx := context.Background()

	b := db.NewBatch()
	defer b.Close() // discards the Puts if Commit is not reached
	if err := b.Put(ctx, "album", strings.NewReader("holidays")); err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"album/beach.jpg", "album/hills.jpg"} {
		if err := b.Put(ctx, name, strings.NewReader("pixels of "+name), kv.WithParent("album")); err != nil {
			log.Fatal(err)
		}
	}
	_, err := db.Stat(ctx, "album")
	fmt.Println("before Commit:", errors.Is(err, kv.ErrNotFound))
	if err := b.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	for k, err := range db.Children(ctx, "album") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(k)
	}
	// Output:
	// before Commit: true
	// album/beach.jpg
	// album/hills.jpg
}
